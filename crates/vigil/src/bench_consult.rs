//! `vigil bench consult`: what a telehealth consultation costs (issue 7,
//! done means 5).
//!
//! 1. **DLP.** The identifier index is built from `--patients` synthetic
//!    patients (MRN, SSN, phone, email, name with birth date). Then `--mb`
//!    megabytes of chat messages and clinical notes, with identifiers
//!    sprinkled in (the consultation patient's own, other patients', near
//!    misses, structural numbers, ordinary clinical numbers), are scanned on
//!    one thread, on the clinician side (index lookups) and on the patient
//!    side (structural patterns only). Each phase runs `--rounds` times and
//!    the fastest round is reported.
//! 2. **Signaling.** A real server in this process (SQLite in a scratch
//!    directory, the router on 127.0.0.1) and real WebSocket clients: a
//!    clinician signed in with a password, and a patient holding the guest
//!    pass of an invite's birth-date check. The clinician admits the patient
//!    and sends ICE candidates, pipelined with a bounded window; the patient
//!    reads them. Messages/s end to end and the one-way latency (both ends
//!    timestamped in this process), then one message at a time (the unloaded
//!    latency), then several rooms at once. The server turns Nagle's
//!    algorithm off, as `vigil serve` does, unless `--server-nagle`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use app::Principal;
use app::telehealth::{CheckResult, ConsultConfig, InviteRequest, Invitee};
use axum::serve::ListenerExt;
use clap::Args;
use consult::dlp::{self, IdentifierIndex, IndexKey, PatientIdentifiers, PersonName, Side};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use model::{ResourceId, ResourceType, SystemClock};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::bench_monitor::memory;
use crate::monitor_cli::thousands;
use crate::serve::bar;

/// The guest pass cookie the join page sets (`web`'s consult pages).
const PASS_COOKIE: &str = "__Host-vigil_consult";
/// The bench clinicians' password (long enough without a second factor).
const PASSWORD: &str = "quiet lantern over harbour 48";
/// The most messages in flight: a relayed message waits in the recipient's
/// channel, and a full channel drops it (a stalled client), so the window
/// stays well below the channel's depth.
const MAX_WINDOW: usize = app::telehealth::CHANNEL_DEPTH / 2;
/// How long a connection may make no progress before the bench gives up.
const STALL: Duration = Duration::from_secs(30);
/// Messages per room sent before the measured passes, not counted.
const WARM_UP: usize = 1_000;
/// Messages sent one at a time for the unloaded latency.
const ONE_AT_A_TIME: usize = 2_000;

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ConsultBenchArgs {
    /// Synthetic patients whose identifiers the DLP index holds.
    #[arg(long, default_value_t = 100_000)]
    pub patients: usize,
    /// Megabytes (10^6 bytes) of chat and clinical text scanned on each side.
    #[arg(long, default_value_t = 8)]
    pub mb: usize,
    /// Signaling messages the clinician sends in each room.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Signaling messages in flight at most (sent and not yet received).
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Rooms in the concurrent signaling pass.
    #[arg(long, default_value_t = 4)]
    pub rooms: usize,
    /// Seed of the synthetic patients and text.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Runs of the index build and of each scan; the fastest is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Leaves Nagle's algorithm on for the server's connections (`vigil
    /// serve` turns it off), to show what that changes.
    #[arg(long)]
    pub server_nagle: bool,
}

impl ConsultBenchArgs {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=10_000_000).contains(&self.patients),
            "--patients must be between 1 and 10,000,000"
        );
        ensure!(
            (1..=4_096).contains(&self.mb),
            "--mb must be between 1 and 4096"
        );
        ensure!(
            (1..=10_000_000).contains(&self.messages),
            "--messages must be between 1 and 10,000,000"
        );
        ensure!(
            (1..=MAX_WINDOW).contains(&self.window),
            "--window must be between 1 and {MAX_WINDOW} (a relayed message waits in a channel of {})",
            app::telehealth::CHANNEL_DEPTH
        );
        ensure!(
            (1..=64).contains(&self.rooms),
            "--rooms must be between 1 and 64"
        );
        ensure!(
            (1..=100).contains(&self.rounds),
            "--rounds must be between 1 and 100"
        );
        Ok(())
    }
}

pub async fn run(args: &ConsultBenchArgs) -> anyhow::Result<()> {
    args.check()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "vigil bench consult: {cores} core{} available{}",
        if cores == 1 { "" } else { "s" },
        if cfg!(debug_assertions) {
            " (a debug build: run with --release for figures)"
        } else {
            ""
        }
    );
    dlp_phase(args)?;
    signaling(args).await
}

// ---- DLP ----

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
const CHAT: [&str; 16] = [
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
    "ok thanks, I'll try that tonight",
    "The sound is cutting out, could you say that again?",
    "Yes, the swelling went down after two days of ice and elevation.",
    "I take the blue pill in the morning and the small white one at night.",
];
const NOTE: [&str; 18] = [
    "Subjective: 54-year-old seen by video for follow-up of type 2 diabetes and hypertension.",
    "Reports good adherence to metformin 1000 mg twice daily; occasional missed evening dose.",
    "Denies polyuria, polydipsia, chest pain, dyspnea, or visual changes.",
    "Home glucose log reviewed: fasting 110-145 mg/dL over the past 14 days.",
    "Objective: alert, oriented, speaking in full sentences; no distress on camera.",
    "Home BP cuff readings 128/82, 134/86 and 131/79; pulse 72 regular by patient report.",
    "Skin: 3 cm erythematous patch on the left forearm with well-defined borders, no vesicles.",
    "Labs 2024-11-02: HbA1c 7.4%, LDL 96 mg/dL, eGFR 78 mL/min/1.73m2, UACR 18 mg/g.",
    "Assessment: T2DM, suboptimally controlled (E11.65); essential hypertension, controlled (I10).",
    "Plan: increase empagliflozin to 25 mg daily; continue lisinopril 20 mg daily.",
    "Counselled on hypoglycaemia symptoms, sick-day rules and foot care.",
    "Ordered CMP and lipid panel before the next visit; order 20241102-0042 placed.",
    "Referral to ophthalmology for annual retinal screening; last exam 14 months ago.",
    "Patient verbalised understanding of the plan and agreed to follow up in 12 weeks.",
    "Time spent: 25 minutes, more than half in counselling and coordination of care.",
    "Medication reconciliation completed; no new allergies reported (NKDA).",
    "Vaccinations: influenza given 2024-10-05 (lot 4471-22), due for Tdap booster.",
    "Red flags reviewed: seek urgent care for chest pain, weakness, or confusion.",
];

/// A synthetic patient.
struct Synth {
    given: &'static str,
    family: &'static str,
    birth: (u32, u32, u32),
    phone: (u32, u32, u32),
    mrn_prefix: &'static str,
    mrn: u32,
    email: String,
    ssn: (u32, u32, u32),
}

impl Synth {
    fn mrn(&self) -> String {
        format!("{}{:07}", self.mrn_prefix, self.mrn)
    }

    fn ssn(&self) -> String {
        let (a, g, s) = self.ssn;
        format!("{a:03}-{g:02}-{s:04}")
    }
}

fn one_of<'a>(rng: &mut StdRng, xs: &[&'a str]) -> &'a str {
    xs.choose(rng).copied().unwrap_or("")
}

fn synth(rng: &mut StdRng, i: usize) -> Synth {
    let given = one_of(rng, &GIVEN);
    let family = one_of(rng, &FAMILY);
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
        mrn_prefix: one_of(rng, &["MR", "VG", "EH"]),
        mrn: rng.gen_range(0..10_000_000),
        email: format!(
            "{}.{}{}@example.org",
            given.to_lowercase(),
            family.to_lowercase().replace('\'', ""),
            i
        ),
        ssn: (area, rng.gen_range(1..100), rng.gen_range(1..10_000)),
    }
}

fn identifiers(i: usize, s: &Synth) -> PatientIdentifiers {
    let (y, m, d) = s.birth;
    let (a, e, l) = s.phone;
    PatientIdentifiers {
        patient_id: format!("pat-{i:07}"),
        mrns: vec![s.mrn()],
        ssns: vec![s.ssn()],
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
        5 => format!("See chart {} for the earlier notes.", s.mrn()),
        6 => format!("SSN on the form: {}.", s.ssn()),
        _ => format!("Please confirm the address on file for {}.", s.email),
    }
}

/// Something close to an identifier of `s` that is not one: one digit off,
/// another birth year, another mailbox.
fn near_miss(rng: &mut StdRng, s: &Synth) -> String {
    let (y, m, d) = s.birth;
    let (a, e, l) = s.phone;
    match rng.gen_range(0..5) {
        0 => format!("Near miss, not theirs: {a}-{e}-{:04}.", (l + 1) % 10_000),
        1 => format!(
            "Chart {}{:07} was merged last year.",
            s.mrn_prefix,
            (s.mrn + 1) % 10_000_000
        ),
        2 => {
            let (ar, g, sr) = s.ssn;
            format!("Old form had {ar:03}-{g:02}-{:04}.", sr % 9_999 + 1)
        }
        3 => format!(
            "{} {} (born {}-{m:02}-{d:02}) is a different person.",
            s.given,
            s.family,
            y + 1
        ),
        _ => format!(
            "Write to {}.{}@example.net instead.",
            s.given.to_lowercase(),
            s.family.to_lowercase().replace('\'', "")
        ),
    }
}

/// The digits `base` followed by the check digit `valid` accepts.
fn with_check_digit(base: &str, valid: impl Fn(&str) -> bool) -> String {
    (0..10)
        .map(|d| format!("{base}{d}"))
        .find(|s| valid(s))
        .unwrap_or_else(|| format!("{base}0"))
}

/// A number recognised by its structure: an NPI, a DEA number, a payment
/// card, an SSN that could have been issued (and is nobody's here but by
/// chance).
fn structural(rng: &mut StdRng) -> String {
    match rng.gen_range(0..4) {
        0 => {
            let npi = with_check_digit(
                &format!("1{:08}", rng.gen_range(0..100_000_000)),
                dlp::structural::is_valid_npi,
            );
            format!("Referring provider NPI {npi}.")
        }
        1 => {
            let dea = with_check_digit(
                &format!(
                    "{}{}{:06}",
                    one_of(rng, &["A", "B", "F", "M"]),
                    one_of(rng, &["P", "K", "S", "W"]),
                    rng.gen_range(0..1_000_000)
                ),
                dlp::structural::is_valid_dea,
            );
            format!("Prescriber DEA {dea} on the script.")
        }
        2 => {
            let card = with_check_digit(
                &format!("4{:014}", rng.gen_range(0..100_000_000_000_000u64)),
                dlp::structural::is_valid_card,
            );
            format!("I can pay the copay with card {card}.")
        }
        _ => format!(
            "my social is {:03}-{:02}-{:04}",
            rng.gen_range(1..666),
            rng.gen_range(1..100),
            rng.gen_range(1..10_000)
        ),
    }
}

/// Numbers a clinician types all the time that identify nobody.
fn clinical_number(rng: &mut StdRng) -> String {
    match rng.gen_range(0..6) {
        0 => format!(
            "BP {}/{}, HR {}, SpO2 {}%.",
            rng.gen_range(100..160),
            rng.gen_range(60..100),
            rng.gen_range(50..110),
            rng.gen_range(90..100)
        ),
        1 => format!(
            "Order 2024{:02}{:02}-{:04} is in.",
            rng.gen_range(1..=12),
            rng.gen_range(1..=28),
            rng.gen_range(0..10_000)
        ),
        2 => "Call the clinic on (617) 555-0100 to reschedule.".to_owned(),
        3 => format!(
            "Lot {}-{:02} expires 2026-{:02}.",
            rng.gen_range(1000..10_000),
            rng.gen_range(0..100),
            rng.gen_range(1..=12)
        ),
        4 => "Codes E11.9 and I10; CPT 99214.".to_owned(),
        _ => format!(
            "Weight {}.{} kg, down {} kg since March.",
            rng.gen_range(50..120),
            rng.gen_range(0..10),
            rng.gen_range(1..6)
        ),
    }
}

/// What was sprinkled into the text, by kind.
#[derive(Default)]
struct Planted {
    own: usize,
    other: usize,
    near_miss: usize,
    structural: usize,
    clinical: usize,
}

/// A chat message or a note, scanned in the consultation of `consult`.
struct Text {
    body: String,
    consult: usize,
    /// Another patient's identifier is in it: the clinician side should block.
    other: bool,
}

fn sprinkle(
    rng: &mut StdRng,
    synths: &[Synth],
    consult: usize,
    planted: &mut Planted,
    other: &mut bool,
) -> String {
    let n = synths.len();
    let roll = rng.gen_range(0..100);
    let own = synths.get(consult);
    let someone_else = if n > 1 {
        synths.get((consult + rng.gen_range(1..n)) % n)
    } else {
        None
    };
    match (roll, own, someone_else) {
        (0..20, Some(s), _) => {
            planted.own += 1;
            mention(rng, s)
        }
        (20..45, _, Some(s)) => {
            planted.other += 1;
            *other = true;
            mention(rng, s)
        }
        (45..65, Some(s), _) => {
            planted.near_miss += 1;
            near_miss(rng, s)
        }
        (65..80, _, _) => {
            planted.structural += 1;
            structural(rng)
        }
        _ => {
            planted.clinical += 1;
            clinical_number(rng)
        }
    }
}

/// About `bytes` of text: four in five texts are chat messages of one to
/// three sentences (one in six with something sprinkled in), the rest
/// clinical notes of 6 to 18 sentences (one sentence in four followed by
/// something).
fn texts(rng: &mut StdRng, synths: &[Synth], bytes: usize) -> (Vec<Text>, Planted) {
    let mut planted = Planted::default();
    let mut out = Vec::new();
    let mut total = 0;
    while total < bytes {
        let consult = rng.gen_range(0..synths.len());
        let mut body = String::new();
        let mut other = false;
        if rng.gen_bool(0.8) {
            for _ in 0..rng.gen_range(1..=3) {
                body.push_str(one_of(rng, &CHAT));
                body.push(' ');
            }
            if rng.gen_bool(1.0 / 6.0) {
                body.push_str(&sprinkle(rng, synths, consult, &mut planted, &mut other));
            }
        } else {
            body.push_str("Telehealth progress note.\n");
            for _ in 0..rng.gen_range(6..=18) {
                body.push_str(one_of(rng, &NOTE));
                body.push(' ');
                if rng.gen_bool(0.25) {
                    body.push_str(&sprinkle(rng, synths, consult, &mut planted, &mut other));
                    body.push(' ');
                }
                if rng.gen_bool(0.3) {
                    body.push('\n');
                }
            }
        }
        total += body.len();
        out.push(Text {
            body,
            consult,
            other,
        });
    }
    (out, planted)
}

fn byte_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(what.to_owned());
    pb
}

struct SideFigures {
    elapsed: Duration,
    blocked: usize,
    /// Blocked texts that carry another patient's identifier.
    blocked_other: usize,
    flagged: usize,
    findings: usize,
}

/// The fastest of `rounds` scans of every text on `side`.
fn scan_side(
    index: &IdentifierIndex,
    texts: &[Text],
    ids: &[PatientIdentifiers],
    side: Side,
    total: usize,
    rounds: u32,
) -> anyhow::Result<SideFigures> {
    let mut best = scan_once(index, texts, ids, side, total)?;
    for _ in 1..rounds {
        let f = scan_once(index, texts, ids, side, total)?;
        best.elapsed = best.elapsed.min(f.elapsed);
    }
    Ok(best)
}

fn scan_once(
    index: &IdentifierIndex,
    texts: &[Text],
    ids: &[PatientIdentifiers],
    side: Side,
    total: usize,
) -> anyhow::Result<SideFigures> {
    let pb = byte_bar(
        total as u64,
        match side {
            Side::Clinician => "clinician",
            Side::Patient => "patient",
        },
    );
    let mut f = SideFigures {
        elapsed: Duration::ZERO,
        blocked: 0,
        blocked_other: 0,
        flagged: 0,
        findings: 0,
    };
    let mut done = 0u64;
    let started = Instant::now();
    for (k, t) in texts.iter().enumerate() {
        let consult = ids.get(t.consult).map_or("", |p| p.patient_id.as_str());
        let scan = dlp::scan(index, &t.body, side, consult)?;
        f.findings += scan.verdict().findings().len();
        match scan.verdict() {
            dlp::Verdict::Block { .. } => {
                f.blocked += 1;
                if t.other {
                    f.blocked_other += 1;
                }
            }
            dlp::Verdict::Flag { .. } => f.flagged += 1,
            dlp::Verdict::Allow { .. } => {}
        }
        done += t.body.len() as u64;
        if k % 512 == 0 {
            pb.set_position(done);
        }
    }
    f.elapsed = started.elapsed();
    pb.finish_and_clear();
    Ok(f)
}

/// Builds the index, with a progress bar; returns the time it took.
fn build_index(
    key: &IndexKey,
    ids: &[PatientIdentifiers],
) -> anyhow::Result<(Duration, IdentifierIndex)> {
    let pb = bar(ids.len() as u64, "indexing");
    let started = Instant::now();
    let mut index = IdentifierIndex::new(key);
    for (i, p) in ids.iter().enumerate() {
        index.add(p)?;
        if i % 4096 == 0 {
            pb.set_position(i as u64);
        }
    }
    let took = started.elapsed();
    pb.finish_and_clear();
    Ok((took, index))
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

fn dlp_phase(args: &ConsultBenchArgs) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let synths: Vec<Synth> = (0..args.patients).map(|i| synth(&mut rng, i)).collect();
    let ids: Vec<PatientIdentifiers> = synths
        .iter()
        .enumerate()
        .map(|(i, s)| identifiers(i, s))
        .collect();

    let key = IndexKey::new(rng.r#gen());
    let rss_before = memory("VmRSS:");
    let (mut build, mut index) = build_index(&key, &ids)?;
    let rss_after = memory("VmRSS:");
    for _ in 1..args.rounds {
        // One index at a time in memory.
        drop(index);
        let (t, next) = build_index(&key, &ids)?;
        build = build.min(t);
        index = next;
    }
    println!(
        "DLP index: {} patients (MRN, SSN, phone, email, name + birth date), {} distinct values ({} skipped), built in {:.2} s ({} patients/s, one thread, fastest of {})",
        thousands(index.patient_count() as u64),
        thousands(index.value_count() as u64),
        thousands(index.skipped_values() as u64),
        build.as_secs_f64(),
        thousands((ids.len() as f64 / build.as_secs_f64().max(1e-9)) as u64),
        args.rounds,
    );
    println!(
        "  memory: estimate {:.1} MiB ({:.0} bytes a patient); process resident {rss_before} before the first build, {rss_after} after",
        index.memory_estimate_bytes() as f64 / (1024.0 * 1024.0),
        index.memory_estimate_bytes() as f64 / index.patient_count().max(1) as f64,
    );

    let want = args.mb * 1_000_000;
    let (texts, planted) = texts(&mut rng, &synths, want);
    let total: usize = texts.iter().map(|t| t.body.len()).sum();
    let with_other = texts.iter().filter(|t| t.other).count();
    println!(
        "DLP scan, one thread, fastest of {} rounds: {:.1} MB in {} texts (chat messages and clinical notes), planted: {} of the patient's own identifiers, {} of other patients' (in {} texts), {} near misses, {} structural numbers, {} clinical numbers",
        args.rounds,
        total as f64 / 1e6,
        thousands(texts.len() as u64),
        thousands(planted.own as u64),
        thousands(planted.other as u64),
        thousands(with_other as u64),
        thousands(planted.near_miss as u64),
        thousands(planted.structural as u64),
        thousands(planted.clinical as u64),
    );
    let clinician = scan_side(&index, &texts, &ids, Side::Clinician, total, args.rounds)?;
    let line = |label: &str, f: &SideFigures| {
        println!(
            "  {label:<34} {:>7.1} MB/s  {:>9} texts/s  {:.2} s  {} blocked, {} flagged, {} findings",
            mb_per_s(total, f.elapsed),
            thousands((texts.len() as f64 / f.elapsed.as_secs_f64().max(1e-9)) as u64),
            f.elapsed.as_secs_f64(),
            thousands(f.blocked as u64),
            thousands(f.flagged as u64),
            thousands(f.findings as u64),
        );
    };
    line("clinician side (index lookups)", &clinician);
    let patient = scan_side(&index, &texts, &ids, Side::Patient, total, args.rounds)?;
    line("patient side (structural only)", &patient);
    println!(
        "  clinician side: {} of the {} texts with another patient's identifier blocked, {} other texts blocked",
        thousands(clinician.blocked_other as u64),
        thousands(with_other as u64),
        thousands((clinician.blocked - clinician.blocked_other) as u64),
    );
    ensure!(
        patient.blocked == 0,
        "sanity: the patient side blocked {} texts (it must never consult the index)",
        patient.blocked
    );
    ensure!(
        with_other == 0 || clinician.blocked > 0,
        "sanity: the clinician side blocked nothing although {with_other} texts carry another patient's identifier"
    );
    println!(
        "  sanity: {} blocked on the clinician side, none on the patient side: ok",
        thousands(clinician.blocked as u64)
    );
    Ok(())
}

// ---- signaling ----

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One room: the clinician's sending half, the patient's receiving half.
struct Pair {
    clinician: Option<SplitSink<Ws, Message>>,
    patient: Option<SplitStream<Ws>>,
    /// Kept so the patient's socket stays whole.
    _patient_sink: SplitSink<Ws, Message>,
    /// What the server answered the clinician with `error`.
    errors: Arc<Mutex<Vec<String>>>,
    drain: tokio::task::JoinHandle<()>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

async fn signaling(args: &ConsultBenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "vigil-bench-consult-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = signaling_in(&dir, args).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn signaling_in(dir: &Path, args: &ConsultBenchArgs) -> anyhow::Result<()> {
    let store: Arc<dyn store::Store> = Arc::new(
        store_sqlite::SqliteStore::open(
            &dir.join("vigil.db"),
            store_sqlite::SqliteOptions::default(),
        )
        .await?,
    );
    store.migrate().await?;
    let kf = crypto::KeyFile::generate();
    let source = crypto::KeyFileSource::Inline(kf.to_toml()?);
    let mut vigil = app::Vigil::open(
        store,
        &kf,
        source,
        Arc::new(SystemClock),
        app::Config::default(),
    )
    .await?;
    // A password alone signs the clinicians in (no second factor to script).
    vigil.configure_identity(
        &kf,
        app::IdentityConfig {
            workforce_mfa: false,
            ..app::IdentityConfig::default()
        },
    )?;
    let vigil = Arc::new(vigil);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let origin = format!("http://{addr}");
    vigil.configure_consult(ConsultConfig {
        allowed_origins: vec![origin.clone()],
        invite_ttl_secs: 3600,
        ..ConsultConfig::default()
    });
    let router = web::router(web::WebState {
        vigil: Arc::clone(&vigil),
        public_base: None,
        proxies: Default::default(),
    });
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = if !args.server_nagle {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await })
    } else {
        tokio::spawn(async move { axum::serve(listener, app).await })
    };
    let result = rooms_and_passes(&vigil, addr, &origin, args).await;
    server.abort();
    result
}

async fn rooms_and_passes(
    vigil: &app::Vigil,
    addr: SocketAddr,
    origin: &str,
    args: &ConsultBenchArgs,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let pb = bar(args.rooms as u64, "rooms");
    let mut pairs = Vec::with_capacity(args.rooms);
    for i in 0..args.rooms {
        pairs.push(
            pair(vigil, addr, origin, i)
                .await
                .with_context(|| format!("setting up room {i}"))?,
        );
        pb.set_position(i as u64 + 1);
    }
    pb.finish_and_clear();
    println!(
        "signaling: a server in this process on {addr} (SQLite in a scratch directory, TCP_NODELAY {}); {} room{} set up in {:.1} s (appointment booked by the operator, clinician signed in with a password, invite, birth-date check, two WebSockets, admission)",
        if args.server_nagle {
            "off (--server-nagle)"
        } else {
            "on, as `vigil serve` ships"
        },
        args.rooms,
        if args.rooms == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    );

    let warm = WARM_UP.min(args.messages);
    pass(&mut pairs, warm, args.window, None).await?;

    let one = pairs.get_mut(..1).context("no room was set up")?;
    let pb = bar(args.messages as u64, "messages");
    let loaded = pass(one, args.messages, args.window, Some(&pb)).await?;
    pb.finish_and_clear();
    println!(
        "  1 room, ICE candidates clinician → server → patient, at most {} in flight (after {warm} not counted):",
        args.window
    );
    loaded.print("end to end");
    let n = ONE_AT_A_TIME.min(args.messages);
    let single = pass(one, n, 1, None).await?;
    println!("  1 room, one message at a time (the next sent when the last arrived):");
    single.print("unloaded");

    if args.rooms > 1 {
        let pb = bar((args.messages * args.rooms) as u64, "messages");
        let all = pass(&mut pairs, args.messages, args.window, Some(&pb)).await?;
        pb.finish_and_clear();
        println!(
            "  {} rooms at once, {} messages each, at most {} in flight per room:",
            args.rooms,
            thousands(args.messages as u64),
            args.window
        );
        all.print("aggregate");
    }
    // Leave the rooms before the server goes.
    for p in &mut pairs {
        if let Some(mut s) = p.clinician.take() {
            let _ = s.close().await;
        }
    }
    drop(pairs);
    Ok(())
}

fn rid(s: &str) -> anyhow::Result<ResourceId> {
    ResourceId::new(s).map_err(|e| anyhow!("resource id {s}: {e}"))
}

async fn put(vigil: &app::Vigil, rtype: ResourceType, body: Value) -> anyhow::Result<()> {
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .context("a resource without an id")?;
    let id = rid(id)?;
    vigil
        .update(&Principal::Operator, rtype, &id, body, None)
        .await
        .with_context(|| format!("writing {rtype}/{id}"))?;
    Ok(())
}

/// One room with its clinician and patient connected, the patient admitted.
async fn pair(
    vigil: &app::Vigil,
    addr: SocketAddr,
    origin: &str,
    i: usize,
) -> anyhow::Result<Pair> {
    let pr = format!("bench-pr{i}");
    let pt = format!("bench-pt{i}");
    let ap = format!("bench-appt{i}");
    let dob = format!("19{:02}-{:02}-{:02}", 40 + i % 50, 1 + i % 12, 1 + i % 28);
    let now = model::Timestamp::from_offset_datetime(time::OffsetDateTime::now_utc()).0;
    let at = |secs: i64| model::Timestamp(now + secs * 1_000_000).to_fhir_instant();
    put(
        vigil,
        ResourceType::Practitioner,
        json!({"resourceType": "Practitioner", "id": pr, "active": true,
               "name": [{"family": format!("Bench{i}"), "given": ["Dana"]}]}),
    )
    .await?;
    put(
        vigil,
        ResourceType::Patient,
        json!({"resourceType": "Patient", "id": pt,
               "identifier": [{"system": app::demo::MRN_SYSTEM, "value": format!("MRN{i:07}")}],
               "name": [{"family": format!("Patient{i}"), "given": ["Rosa"]}],
               "telecom": [{"system": "phone", "value": format!("+1 617 555 {:04}", 1000 + i)}],
               "birthDate": dob}),
    )
    .await?;
    // Booked by the clinic (the operator), not by the clinician: a room opens.
    put(
        vigil,
        ResourceType::Appointment,
        json!({"resourceType": "Appointment", "id": ap, "status": "booked",
        "start": at(-300), "end": at(3 * 3600),
        "participant": [
            {"actor": {"reference": format!("Patient/{pt}")}, "status": "accepted"},
            {"actor": {"reference": format!("Practitioner/{pr}")}, "status": "accepted"}
        ]}),
    )
    .await?;
    let username = format!("bench.dr{i}");
    vigil
        .create_account(
            &Principal::Operator,
            app::NewAccount {
                username: username.clone(),
                role: store::Role::Physician,
                practitioner: Some(rid(&pr)?),
                patient: None,
                display_name: Some(format!("Dr Bench {i}")),
                email: None,
            },
            Some(PASSWORD),
        )
        .await?;
    let session = match vigil
        .sign_in_password(&username, PASSWORD, "127.0.0.1")
        .await
        .map_err(|e| anyhow!("signing {username} in: {e}"))?
    {
        app::SignInStep::Done(s) => s,
        _ => bail!("{username} is asked for a second factor"),
    };
    let view = vigil
        .session(&session.cookie)
        .await
        .map_err(|e| anyhow!("the session of {username}: {e:?}"))?;
    let dr = Principal::User(view.caller);
    let room = vigil.consult_open(&dr, &rid(&ap)?).await?;
    let to = format!("patient{i}@example.org");
    vigil
        .consult_invite(
            &dr,
            &room.id,
            &InviteRequest {
                method: "dob".into(),
                channel: "email".into(),
                to: to.clone(),
                invitee: Invitee::Patient,
            },
            origin,
        )
        .await?;
    let token = invite_token(vigil, &to).await?;
    let pass = match vigil.consult_check(&token, &dob).await? {
        CheckResult::Passed(p) => p,
        other => bail!("the birth-date check did not pass: {other:?}"),
    };
    let guest = vigil.consult_pass_token(&pass)?;

    let url = format!("ws://{addr}/consult/ws?room={}", room.id);
    let clinician = connect(
        &url,
        origin,
        &format!("{}={}", auth::session::COOKIE_NAME, session.cookie),
    )
    .await
    .context("the clinician's WebSocket")?;
    let patient = connect(&url, origin, &format!("{PASS_COOKIE}={guest}"))
        .await
        .context("the patient's WebSocket")?;
    let (mut c_tx, c_rx) = clinician.split();
    let (p_tx, mut p_rx) = patient.split();
    wait_for(&mut p_rx, "waiting").await?;
    c_tx.send(Message::text(
        json!({"type": "admit", "participant": "patient"}).to_string(),
    ))
    .await?;
    wait_for(&mut p_rx, "admitted").await?;
    let errors = Arc::new(Mutex::new(Vec::new()));
    let drain = tokio::spawn(drain(c_rx, Arc::clone(&errors)));
    Ok(Pair {
        clinician: Some(c_tx),
        patient: Some(p_rx),
        _patient_sink: p_tx,
        errors,
        drain,
    })
}

/// The invite token from the outbox message sent to `to`.
async fn invite_token(vigil: &app::Vigil, to: &str) -> anyhow::Result<String> {
    let msgs = vigil.outbox(&Principal::Operator, 100).await?;
    let body = &msgs
        .iter()
        .find(|m| m.kind == "consult-invite" && m.to == to)
        .context("no invite in the outbox")?
        .body;
    let at = body.find("/join/").context("no join link in the invite")? + "/join/".len();
    body.get(at..)
        .and_then(|rest| rest.split(char::is_whitespace).next())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .context("no token in the join link")
}

async fn connect(url: &str, origin: &str, cookie: &str) -> anyhow::Result<Ws> {
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert(header::ORIGIN, HeaderValue::from_str(origin)?);
    req.headers_mut()
        .insert(header::COOKIE, HeaderValue::from_str(cookie)?);
    // Browsers send without Nagle's delay; the server is as it ships.
    let (ws, _) = tokio::time::timeout(
        STALL,
        tokio_tungstenite::connect_async_with_config(req, None, true),
    )
    .await
    .context("timed out")??;
    Ok(ws)
}

fn frame_type(m: &Message) -> Option<String> {
    let Message::Text(t) = m else { return None };
    let v: Value = serde_json::from_str(t.as_str()).ok()?;
    v.get("type").and_then(Value::as_str).map(str::to_owned)
}

/// Reads frames until one of type `want`.
async fn wait_for(rx: &mut SplitStream<Ws>, want: &str) -> anyhow::Result<()> {
    loop {
        let m = tokio::time::timeout(STALL, rx.next())
            .await
            .with_context(|| format!("no {want} message"))?
            .with_context(|| format!("the socket closed before {want}"))??;
        match frame_type(&m).as_deref() {
            Some(t) if t == want => return Ok(()),
            Some(t @ ("denied" | "ended" | "error")) => {
                bail!("waiting for {want}, the server sent {t}: {m}")
            }
            _ => {}
        }
    }
}

/// Reads what the server sends the clinician, keeping the errors.
async fn drain(mut rx: SplitStream<Ws>, errors: Arc<Mutex<Vec<String>>>) {
    while let Some(Ok(m)) = rx.next().await {
        if frame_type(&m).as_deref() == Some("error") {
            let mut e = match errors.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if e.len() < 1000 {
                e.push(m.to_string());
            }
        }
    }
}

fn candidate_frame(seq: usize) -> String {
    format!(
        r#"{{"type":"ice-candidate","to":"patient","candidate":"candidate:{seq} 1 udp 2122260223 10.77.0.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0}}"#
    )
}

/// The sequence number in a candidate line `candidate:{seq} …`.
fn candidate_seq(text: &str) -> Option<usize> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("type").and_then(Value::as_str) != Some("ice-candidate") {
        return None;
    }
    v.get("candidate")?
        .as_str()?
        .strip_prefix("candidate:")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

fn nanos_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

async fn send_candidates(
    mut tx: SplitSink<Ws, Message>,
    n: usize,
    window: Arc<Semaphore>,
    sent_at: Arc<Vec<AtomicU64>>,
    t0: Instant,
) -> (SplitSink<Ws, Message>, anyhow::Result<()>) {
    let result = async {
        for seq in 0..n {
            tokio::time::timeout(STALL, window.acquire())
                .await
                .with_context(|| {
                    format!("message {seq}: nothing arrived for {} s", STALL.as_secs())
                })??
                .forget();
            if let Some(slot) = sent_at.get(seq) {
                slot.store(nanos_since(t0), Ordering::Release);
            }
            tx.send(Message::text(candidate_frame(seq))).await?;
        }
        anyhow::Ok(())
    }
    .await;
    (tx, result)
}

struct Received {
    got: usize,
    latencies_us: Vec<f64>,
    last_ns: u64,
    problem: Option<String>,
}

async fn receive_candidates(
    mut rx: SplitStream<Ws>,
    n: usize,
    window: Arc<Semaphore>,
    sent_at: Arc<Vec<AtomicU64>>,
    t0: Instant,
    pb: Option<ProgressBar>,
) -> (SplitStream<Ws>, Received) {
    let mut r = Received {
        got: 0,
        latencies_us: Vec::with_capacity(n),
        last_ns: 0,
        problem: None,
    };
    while r.got < n {
        let m = match tokio::time::timeout(STALL, rx.next()).await {
            Err(_) => {
                r.problem = Some(format!("nothing arrived for {} s", STALL.as_secs()));
                break;
            }
            Ok(None) => {
                r.problem = Some("the patient's socket closed".into());
                break;
            }
            Ok(Some(Err(e))) => {
                r.problem = Some(format!("the patient's socket: {e}"));
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        let Message::Text(t) = &m else { continue };
        let Some(seq) = candidate_seq(t.as_str()) else {
            continue;
        };
        let now = nanos_since(t0);
        if let Some(sent) = sent_at.get(seq).map(|s| s.load(Ordering::Acquire))
            && sent > 0
        {
            r.latencies_us.push(now.saturating_sub(sent) as f64 / 1e3);
        }
        r.last_ns = now;
        r.got += 1;
        window.add_permits(1);
        if let Some(pb) = &pb
            && r.got.is_multiple_of(256)
        {
            pb.inc(256);
        }
    }
    if let Some(pb) = &pb {
        pb.inc((r.got % 256) as u64);
    }
    (rx, r)
}

struct PassFigures {
    messages: usize,
    elapsed: Duration,
    latencies_us: Vec<f64>,
}

impl PassFigures {
    fn print(&self, what: &str) {
        let mut v = self.latencies_us.clone();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let i = ((v.len() as f64 - 1.0) * p).round() as usize;
            v.get(i).copied().unwrap_or(0.0) / 1e3
        };
        println!(
            "    {} messages in {:.2} s: {} messages/s {what}; one-way latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            thousands(self.messages as u64),
            self.elapsed.as_secs_f64(),
            thousands((self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)) as u64),
            at(0.5),
            at(0.99),
            at(1.0),
        );
    }
}

/// Sends `n` candidates in every room of `pairs` at once, at most `window`
/// in flight per room, and waits for all of them to arrive.
async fn pass(
    pairs: &mut [Pair],
    n: usize,
    window: usize,
    pb: Option<&ProgressBar>,
) -> anyhow::Result<PassFigures> {
    let t0 = Instant::now();
    let mut running = Vec::with_capacity(pairs.len());
    for p in pairs.iter_mut() {
        let tx = p
            .clinician
            .take()
            .context("the clinician's socket was lost")?;
        let rx = p.patient.take().context("the patient's socket was lost")?;
        let sem = Arc::new(Semaphore::new(window));
        let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let sender = tokio::spawn(send_candidates(
            tx,
            n,
            Arc::clone(&sem),
            Arc::clone(&sent_at),
            t0,
        ));
        let receiver = tokio::spawn(receive_candidates(rx, n, sem, sent_at, t0, pb.cloned()));
        running.push((sender, receiver));
    }
    let mut figures = PassFigures {
        messages: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::with_capacity(n * pairs.len()),
    };
    let mut last_ns = 0;
    for (room, (p, (sender, receiver))) in pairs.iter_mut().zip(running).enumerate() {
        let (rx, got) = receiver.await?;
        let (tx, sent) = sender.await?;
        p.clinician = Some(tx);
        p.patient = Some(rx);
        let errors = match p.errors.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if let Some(first) = errors.first() {
            bail!(
                "room {room}: the server answered the clinician with {} errors, the first {first}",
                errors.len()
            );
        }
        sent.with_context(|| format!("room {room}: sending"))?;
        if let Some(problem) = got.problem {
            bail!(
                "room {room}: {} of {n} messages arrived: {problem}",
                got.got
            );
        }
        figures.messages += got.got;
        figures.latencies_us.extend(got.latencies_us);
        last_ns = last_ns.max(got.last_ns);
    }
    figures.elapsed = Duration::from_nanos(last_ns);
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{BenchCommand, Cli, Command};

    fn parsed(extra: &[&str]) -> ConsultBenchArgs {
        let argv = ["vigil", "bench", "consult"].iter().chain(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Bench {
                what: BenchCommand::Consult(a),
            } => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_issue_s_figures_and_flags_override_them() {
        let a = parsed(&[]);
        assert_eq!(
            (a.patients, a.mb, a.messages, a.window, a.rooms, a.rounds),
            (100_000, 8, 20_000, 64, 4, 3)
        );
        assert!(!a.server_nagle);
        a.check().unwrap();
        let a = parsed(&[
            "--patients",
            "10",
            "--mb",
            "1",
            "--messages",
            "5",
            "--rooms",
            "1",
        ]);
        assert_eq!((a.patients, a.mb, a.messages, a.rooms), (10, 1, 5, 1));
        a.check().unwrap();
        assert!(parsed(&["--window", "0"]).check().is_err());
        assert!(parsed(&["--window", "10000"]).check().is_err());
        assert!(parsed(&["--patients", "0"]).check().is_err());
    }

    #[test]
    fn a_candidate_carries_its_sequence_number_through_the_relay() {
        let sent: Value = serde_json::from_str(&candidate_frame(4711)).unwrap();
        let relayed = json!({"type": "ice-candidate", "from": "clinician",
            "candidate": sent["candidate"], "sdpMid": "0", "sdpMLineIndex": 0});
        assert_eq!(candidate_seq(&relayed.to_string()), Some(4711));
        assert_eq!(candidate_seq(r#"{"type":"waiting"}"#), None);
        let client = consult::signal::parse_client(
            candidate_frame(1).as_bytes(),
            consult::signal::DEFAULT_MAX_FRAME_LEN,
        );
        assert!(client.is_ok(), "{client:?}");
    }

    #[test]
    fn planted_structural_numbers_pass_their_check_digits() {
        let mut rng = StdRng::seed_from_u64(1);
        let npi = with_check_digit("123456789", dlp::structural::is_valid_npi);
        assert!(dlp::structural::is_valid_npi(&npi));
        let dea = with_check_digit("AB123456", dlp::structural::is_valid_dea);
        assert!(dlp::structural::is_valid_dea(&dea));
        for _ in 0..50 {
            assert!(!structural(&mut rng).is_empty());
        }
    }
}
