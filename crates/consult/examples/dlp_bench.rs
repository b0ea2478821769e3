//! DLP throughput with 100,000 patients' identifiers indexed (issue 7, done
//! means 5).
//!
//! `cargo run --release -p consult --example dlp_bench`
//!
//! Builds the index from synthetic patients, then scans a few megabytes of
//! chat messages and clinical text with identifiers sprinkled in, on the
//! clinician side (index lookups) and the patient side (structural only).

#![expect(
    clippy::indexing_slicing,
    reason = "benchmark driver: every index is drawn from the range of the array it indexes"
)]

use std::time::Instant;

use consult::dlp::{self, IdentifierIndex, IndexKey, PatientIdentifiers, PersonName, Side};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PATIENTS: usize = 100_000;
const CHAT_BYTES: usize = 4 << 20;

const GIVEN: [&str; 24] = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Maria",
    "Wei",
    "Aisha",
    "Olumide",
    "Élodie",
];
const FAMILY: [&str; 24] = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Nguyen",
    "Okafor",
    "O'Brien",
    "Chen",
    "Dubois",
    "Kowalski",
];
const CHAT: [&str; 12] = [
    "Good morning, can you hear me all right? The video froze for a second on my side.",
    "Thanks for sending the photo of the rash. It looks like contact dermatitis; keep using the cream twice a day.",
    "Your potassium was 4.1 and the creatinine 0.9, both in the normal range. No change to the lisinopril 10 mg.",
    "Please take 500 mg of amoxicillin three times daily for 7 days, and call if the fever is above 38.5 C.",
    "I have asked the front desk to book a follow-up in 2 weeks; they will text you the link.",
    "Blood pressure readings this week averaged 132/84, which is better than last month.",
    "Any chest pain, shortness of breath, or swelling in the ankles since we last spoke?",
    "The pharmacy on 5th Avenue has the prescription; it should be ready after 3 pm.",
    "We will repeat the HbA1c in three months. Last value 7.2%, target below 7%.",
    "Can you move the camera a little closer to the wound so I can see the edges?",
    "Dr. Patel will join us in a moment to discuss the imaging results from Tuesday.",
    "Reminder: fasting from midnight before the lab draw, water is fine.",
];

struct Synth {
    given: &'static str,
    family: &'static str,
    birth: (u32, u32, u32),
    phone: (u32, u32, u32),
    mrn: String,
    email: String,
    ssn: String,
}

fn synth(rng: &mut StdRng, i: usize) -> Synth {
    let given = GIVEN[rng.gen_range(0..GIVEN.len())];
    let family = FAMILY[rng.gen_range(0..FAMILY.len())];
    let area = loop {
        let a = rng.gen_range(1..900);
        if a != 666 {
            break a;
        }
    };
    Synth {
        given,
        family,
        birth: (
            rng.gen_range(1930..2020),
            rng.gen_range(1..=12),
            rng.gen_range(1..=28),
        ),
        phone: (
            rng.gen_range(201..990),
            rng.gen_range(200..1000),
            rng.gen_range(0..10_000),
        ),
        mrn: format!(
            "{}{:07}",
            ["MR", "VG", "EH"][i % 3],
            rng.gen_range(0..10_000_000)
        ),
        email: format!(
            "{}.{}{}@example.org",
            given.to_lowercase(),
            family.to_lowercase(),
            i
        ),
        ssn: format!(
            "{area:03}-{:02}-{:04}",
            rng.gen_range(1..100),
            rng.gen_range(1..10_000)
        ),
    }
}

fn identifiers(i: usize, s: &Synth) -> PatientIdentifiers {
    let (y, m, d) = s.birth;
    let (a, e, l) = s.phone;
    PatientIdentifiers {
        patient_id: format!("pat-{i:06}"),
        mrns: vec![s.mrn.clone()],
        ssns: vec![s.ssn.clone()],
        phones: vec![format!("({a}) {e}-{l:04}")],
        emails: vec![s.email.clone()],
        names: vec![PersonName {
            family: s.family.into(),
            given: vec![s.given.into()],
        }],
        birth_date: Some(format!("{y:04}-{m:02}-{d:02}")),
    }
}

/// An identifier of patient `s` as a clinician might type it.
fn mention(rng: &mut StdRng, s: &Synth) -> String {
    let (y, m, d) = s.birth;
    let (a, e, l) = s.phone;
    match rng.gen_range(0..8) {
        0 => format!("Call back on {a}-{e}-{l:04} if needed."),
        1 => format!("Their number is +1 ({a}) {e} {l:04}."),
        2 => format!("Re: {} {}, DOB {m:02}/{d:02}/{y}.", s.given, s.family),
        3 => format!(
            "{}, {} (born {y}-{m:02}-{d:02}) was seen today.",
            s.family, s.given
        ),
        4 => format!("Results were also sent to {}.", s.email),
        5 => format!("See chart {} for the earlier notes.", s.mrn),
        6 => format!("SSN on the form: {}.", s.ssn),
        _ => format!("Near miss, not theirs: {a}-{e}-{:04}.", (l + 1) % 10_000),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = StdRng::seed_from_u64(7);
    let synths: Vec<Synth> = (0..PATIENTS).map(|i| synth(&mut rng, i)).collect();
    let ids: Vec<PatientIdentifiers> = synths
        .iter()
        .enumerate()
        .map(|(i, s)| identifiers(i, s))
        .collect();

    let started = Instant::now();
    let index = IdentifierIndex::build(&IndexKey::new(rng.r#gen()), ids.iter().cloned())?;
    let build = started.elapsed();
    println!(
        "index: {} patients, {} distinct values, built in {:.2?} ({:.0} patients/s), ~{:.1} MiB",
        index.patient_count(),
        index.value_count(),
        build,
        PATIENTS as f64 / build.as_secs_f64(),
        index.memory_estimate_bytes() as f64 / (1024.0 * 1024.0),
    );

    // Chat: messages of one to three sentences, one in ten mentioning some
    // patient's identifier; each message is scanned in the consultation of a
    // random patient.
    let mut messages: Vec<(String, usize)> = Vec::new();
    let mut total = 0;
    while total < CHAT_BYTES {
        let consult = rng.gen_range(0..PATIENTS);
        let mut text = String::new();
        for _ in 0..rng.gen_range(1..=3) {
            text.push_str(CHAT[rng.gen_range(0..CHAT.len())]);
            text.push(' ');
        }
        if rng.gen_bool(0.1) {
            let whose = if rng.gen_bool(0.2) {
                consult
            } else {
                rng.gen_range(0..PATIENTS)
            };
            text.push_str(&mention(&mut rng, &synths[whose]));
        }
        total += text.len();
        messages.push((text, consult));
    }
    for side in [Side::Clinician, Side::Patient] {
        let (mut blocks, mut flags, mut findings) = (0, 0, 0);
        let started = Instant::now();
        for (text, consult) in &messages {
            let scan = dlp::scan(&index, text, side, &ids[*consult].patient_id)?;
            findings += scan.verdict().findings().len();
            match scan.verdict() {
                dlp::Verdict::Block { .. } => blocks += 1,
                dlp::Verdict::Flag { .. } => flags += 1,
                dlp::Verdict::Allow { .. } => {}
            }
        }
        let elapsed = started.elapsed();
        println!(
            "chat, {side:?} side: {} messages, {:.1} MB in {:.2?} = {:.1} MB/s, {:.0} messages/s; {findings} findings ({blocks} blocked, {flags} flagged)",
            messages.len(),
            total as f64 / 1e6,
            elapsed,
            total as f64 / 1e6 / elapsed.as_secs_f64(),
            messages.len() as f64 / elapsed.as_secs_f64(),
        );
    }

    // Files: the same text as 1 MiB documents (the scan limit).
    let mut documents: Vec<String> = vec![String::new()];
    for (text, _) in &messages {
        match documents.last_mut() {
            Some(doc) if doc.len() + text.len() < dlp::MAX_TEXT_BYTES => {
                doc.push_str(text);
                doc.push('\n');
            }
            _ => documents.push(text.clone()),
        }
    }
    let started = Instant::now();
    let mut findings = 0;
    for doc in &documents {
        findings += dlp::scan(&index, doc, Side::Clinician, "pat-000000")?
            .verdict()
            .findings()
            .len();
    }
    let elapsed = started.elapsed();
    println!(
        "documents, Clinician side: {} of up to 1 MiB, {:.1} MB in {:.2?} = {:.1} MB/s; {findings} findings",
        documents.len(),
        total as f64 / 1e6,
        elapsed,
        total as f64 / 1e6 / elapsed.as_secs_f64(),
    );
    Ok(())
}
