//! Consult-aware data-loss prevention: what a participant is about to send
//! in a consultation's chat (a message, or the text of a file) is checked
//! before it is stored or delivered.
//!
//! Two kinds of findings:
//! - **Another patient's identifiers** (clinician side only). An
//!   [`IdentifierIndex`] holds keyed hashes of every patient's MRN, SSN,
//!   phone, email and name with birth date. Values in the text that belong to
//!   a patient other than the consultation's, and not to the consultation's
//!   patient too, block the message ([`Verdict::Block`]); the caller may let
//!   the clinician override with a reason.
//! - **Structural patterns** (both sides): SSNs that could have been issued,
//!   NPIs and DEA numbers with valid check digits, payment card numbers
//!   passing Luhn. On the clinician side they flag the message
//!   ([`Verdict::Flag`]); on the patient side they are notices.
//!
//! **Architecture Invariant:** the patient side never consults the index.
//! What the patient sends is never blocked for matching someone else, and a
//! patient's result does not depend on whether a value belongs to anyone:
//! the DLP must not become an oracle for probing other patients' details.
//!
//! **Architecture Invariant:** nothing meant for display carries a matched
//! value or another patient's id. Findings hold a kind and a byte span; the
//! ids of the other patients are kept apart in
//! [`Scan::other_patients_for_audit`], for the audit trail's entity list.
//!
//! Scanning is linear in the text's length: hand-written scanners with
//! bounded look-around, no regular expressions. No IO and no clock; the
//! caller supplies the key.

mod extract;
mod index;
mod normalize;
pub mod structural;

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

pub use index::{IdentifierIndex, IndexKey, PatientIdentifiers, PersonName};

/// The largest text a scan accepts: 1 MiB. Callers cap uploads below it.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// Lesson a block for another patient's identifier links to.
pub const LESSON_OTHER_PATIENT: &str = "dlp-other-patient";
/// Lesson a structural finding links to.
pub const LESSON_STRUCTURAL: &str = "dlp-structural";

/// Why a scan could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlpError {
    /// The text exceeds the scan limit.
    #[error("text of {len} bytes exceeds the scan limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    /// The index holds as many patients as its 32-bit slots allow.
    #[error("identifier index is full")]
    IndexFull,
}

/// Who sends the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The clinician (or other staff) in the consultation.
    Clinician,
    /// The patient, or someone the clinician admitted with them.
    Patient,
}

/// The identifiers the index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    /// Medical record number.
    Mrn,
    /// Social Security number.
    Ssn,
    /// Phone number.
    Phone,
    /// Email address.
    Email,
    /// Name together with birth date.
    NameBirthDate,
}

impl IdentifierKind {
    /// Domain separation inside the keyed hash.
    pub(crate) fn tag(self) -> u8 {
        match self {
            IdentifierKind::Mrn => 1,
            IdentifierKind::Ssn => 2,
            IdentifierKind::Phone => 3,
            IdentifierKind::Email => 4,
            IdentifierKind::NameBirthDate => 5,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            IdentifierKind::Mrn => {
                "This medical record number belongs to a different patient than this consultation's."
            }
            IdentifierKind::Ssn => {
                "This Social Security number belongs to a different patient than this consultation's."
            }
            IdentifierKind::Phone => {
                "This phone number belongs to a different patient than this consultation's."
            }
            IdentifierKind::Email => {
                "This email address belongs to a different patient than this consultation's."
            }
            IdentifierKind::NameBirthDate => {
                "This name and birth date belong to a different patient than this consultation's."
            }
        }
    }
}

/// Numbers recognised by their shape and check digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuralKind {
    /// A Social Security number that could have been issued.
    Ssn,
    /// A National Provider Identifier.
    Npi,
    /// A DEA registration number.
    Dea,
    /// A payment card number.
    PaymentCard,
}

impl StructuralKind {
    fn reason(self) -> &'static str {
        match self {
            StructuralKind::Ssn => {
                "This looks like a Social Security number; share one only when the care needs it."
            }
            StructuralKind::Npi => "This looks like a provider's NPI number.",
            StructuralKind::Dea => {
                "This looks like a DEA registration number, which should not be shared in chat."
            }
            StructuralKind::PaymentCard => {
                "This looks like a payment card number, which should never be shared in chat."
            }
        }
    }
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// An identifier of a patient other than the consultation's.
    OtherPatient(IdentifierKind),
    /// A number recognised by its structure.
    Structural(StructuralKind),
}

/// A byte range of the scanned text, on character boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// One thing found in the text: safe to display and to record, since it
/// holds neither the value nor whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What was found.
    pub kind: FindingKind,
    /// Where, so the UI can highlight it.
    pub span: Span,
    /// A short plain-language explanation.
    pub reason: &'static str,
    /// The id of the lesson the UI links to.
    pub lesson: &'static str,
}

impl Finding {
    fn other_patient(kind: IdentifierKind, span: Span) -> Self {
        Self {
            kind: FindingKind::OtherPatient(kind),
            span,
            reason: kind.reason(),
            lesson: LESSON_OTHER_PATIENT,
        }
    }

    fn structural(kind: StructuralKind, span: Span) -> Self {
        Self {
            kind: FindingKind::Structural(kind),
            span,
            reason: kind.reason(),
            lesson: LESSON_STRUCTURAL,
        }
    }

    fn blocks(&self) -> bool {
        matches!(self.kind, FindingKind::OtherPatient(_))
    }
}

/// The outcome for the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Send; the notices (patient side only) are shown as a gentle warning.
    Allow { notices: Vec<Finding> },
    /// Send, with the findings shown to the clinician and recorded.
    Flag { findings: Vec<Finding> },
    /// Do not send unless the clinician overrides with a reason.
    Block { findings: Vec<Finding> },
}

impl Verdict {
    /// The findings or notices, whatever the verdict.
    pub fn findings(&self) -> &[Finding] {
        match self {
            Verdict::Allow { notices } => notices,
            Verdict::Flag { findings } | Verdict::Block { findings } => findings,
        }
    }

    /// Whether the text must not be sent without an override.
    pub fn is_block(&self) -> bool {
        matches!(self, Verdict::Block { .. })
    }
}

/// The result of a scan.
#[derive(Clone, PartialEq, Eq)]
pub struct Scan {
    verdict: Verdict,
    // Kept apart from the verdict so that serialising what is displayed can
    // never include it.
    other_patients: Vec<String>,
}

impl Scan {
    /// What to show the sender and what the caller does with the text.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// The ids of the other patients whose identifiers were found, sorted.
    ///
    /// **For the audit trail's entity list only**: never display them, and
    /// never send them to the client. Always empty on the patient side.
    pub fn other_patients_for_audit(&self) -> &[String] {
        &self.other_patients
    }
}

impl fmt::Debug for Scan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scan")
            .field("verdict", &self.verdict)
            .field("other_patients", &self.other_patients.len())
            .finish()
    }
}

/// Tunables; the defaults are what the product ships with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanConfig {
    /// Shortest MRN-like token looked up (letters and digits, at least one
    /// digit).
    pub mrn_min_len: usize,
    /// Longest MRN-like token looked up.
    pub mrn_max_len: usize,
    /// How many bytes may separate a name from a date for the pair to be
    /// looked up as name + birth date.
    pub name_date_window: usize,
    /// Texts longer than this are refused (never above [`MAX_TEXT_BYTES`]).
    pub max_text_bytes: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            mrn_min_len: 6,
            mrn_max_len: 12,
            name_date_window: 60,
            max_text_bytes: MAX_TEXT_BYTES,
        }
    }
}

/// Scans `text` sent by `side` in a consultation with `consult_patient`,
/// with the default configuration.
pub fn scan(
    index: &IdentifierIndex,
    text: &str,
    side: Side,
    consult_patient: &str,
) -> Result<Scan, DlpError> {
    scan_with(index, text, side, consult_patient, &ScanConfig::default())
}

/// Scans `text` sent by `side` in a consultation with `consult_patient`.
pub fn scan_with(
    index: &IdentifierIndex,
    text: &str,
    side: Side,
    consult_patient: &str,
    config: &ScanConfig,
) -> Result<Scan, DlpError> {
    let limit = config.max_text_bytes.min(MAX_TEXT_BYTES);
    if text.len() > limit {
        return Err(DlpError::TooLarge {
            len: text.len(),
            limit,
        });
    }
    let clinician = side == Side::Clinician;
    // INVARIANT: on the patient side no index candidate is extracted, so the
    // index is never consulted (the anti-oracle property).
    let extracted = extract::extract(text, config, clinician);
    let mut findings = Vec::new();
    let mut others = BTreeSet::new();
    if clinician {
        let own = index.slot_of(consult_patient);
        for candidate in &extracted.identifiers {
            let holders = index.holders(&index.keyed().digest(candidate.kind, &candidate.value));
            // A value this consultation's patient holds (their own, or one
            // shared with family) is not a leak, whoever else holds it.
            if holders.is_empty() || own.is_some_and(|own| holders.contains(&own)) {
                continue;
            }
            others.extend(holders.iter().copied());
            findings.push(Finding::other_patient(candidate.kind, candidate.span));
        }
    }
    findings.extend(
        extracted
            .structural
            .iter()
            .map(|(kind, span)| Finding::structural(*kind, *span)),
    );
    let findings = prune(findings);
    let verdict = match side {
        Side::Patient => Verdict::Allow { notices: findings },
        Side::Clinician if findings.iter().any(Finding::blocks) => Verdict::Block { findings },
        Side::Clinician if !findings.is_empty() => Verdict::Flag { findings },
        Side::Clinician => Verdict::Allow {
            notices: Vec::new(),
        },
    };
    let other_patients = others
        .into_iter()
        .filter_map(|slot| index.patient_id(slot).map(str::to_owned))
        .collect();
    Ok(Scan {
        verdict,
        other_patients,
    })
}

/// Sorts findings by position and drops those inside another finding at
/// least as severe (a phone number's digits are also an MRN-like run; the
/// national form of a phone inside its international form), in one pass.
fn prune(mut findings: Vec<Finding>) -> Vec<Finding> {
    findings.sort_by(|a, b| {
        (
            a.span.start,
            std::cmp::Reverse(a.span.end),
            !a.blocks(),
            a.kind,
        )
            .cmp(&(
                b.span.start,
                std::cmp::Reverse(b.span.end),
                !b.blocks(),
                b.kind,
            ))
    });
    let mut block_end = 0;
    let mut any_end = 0;
    let mut kept = Vec::with_capacity(findings.len());
    for f in findings {
        let covered = if f.blocks() { block_end } else { any_end };
        if covered >= f.span.end {
            continue;
        }
        if f.blocks() {
            block_end = block_end.max(f.span.end);
        }
        any_end = any_end.max(f.span.end);
        kept.push(f);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn index() -> IdentifierIndex {
        let patients = [
            PatientIdentifiers {
                patient_id: "p1".into(),
                phones: vec!["555-123-4567".into()],
                ..Default::default()
            },
            PatientIdentifiers {
                patient_id: "p2".into(),
                phones: vec!["555-987-6543".into()],
                ssns: vec!["078-05-1120".into()],
                names: vec![PersonName {
                    family: "Smith".into(),
                    given: vec!["John".into()],
                }],
                birth_date: Some("1970-03-04".into()),
                ..Default::default()
            },
        ];
        match IdentifierIndex::build(&IndexKey::new([7; 32]), patients) {
            Ok(index) => index,
            Err(e) => unreachable!("{e}"),
        }
    }

    #[test]
    fn nested_findings_collapse_to_the_widest() {
        let Ok(scan) = scan(&index(), "ring +1 555 987 6543", Side::Clinician, "p1") else {
            unreachable!()
        };
        assert_eq!(scan.verdict().findings().len(), 1, "{scan:?}");
        assert_eq!(
            scan.verdict().findings().first().map(|f| f.span),
            Some(Span { start: 5, end: 20 })
        );
    }

    #[test]
    fn hashing_is_keyed() {
        let index = index();
        let same = index::Keyed::new(&IndexKey::new([7; 32]));
        let other = index::Keyed::new(&IndexKey::new([8; 32]));
        let phone = "5559876543";
        assert_eq!(
            index
                .holders(&same.digest(IdentifierKind::Phone, phone))
                .len(),
            1
        );
        assert!(
            index
                .holders(&other.digest(IdentifierKind::Phone, phone))
                .is_empty()
        );
        // The kind is part of the hashed message.
        assert_ne!(
            same.digest(IdentifierKind::Phone, phone),
            same.digest(IdentifierKind::Mrn, phone)
        );
        assert!(!format!("{:?}", IndexKey::new([7; 32])).contains('7'));
    }

    #[test]
    fn shared_values_survive_adds_and_removes_in_any_order() {
        let key = IndexKey::new([9; 32]);
        let with_phone = |id: &str| PatientIdentifiers {
            patient_id: id.into(),
            phones: vec!["617-555-0142".into()],
            ..Default::default()
        };
        let mut index = IdentifierIndex::new(&key);
        let digest = index.keyed().digest(IdentifierKind::Phone, "6175550142");
        let holders = |index: &IdentifierIndex| -> Vec<String> {
            let mut ids: Vec<String> = index
                .holders(&digest)
                .iter()
                .filter_map(|slot| index.patient_id(*slot).map(str::to_owned))
                .collect();
            ids.sort();
            ids
        };
        for id in ["a", "b", "c"] {
            assert!(index.add(&with_phone(id)).is_ok());
        }
        assert_eq!(holders(&index), ["a", "b", "c"]);
        index.remove("b");
        assert_eq!(holders(&index), ["a", "c"]);
        index.remove("a");
        assert_eq!(holders(&index), ["c"]);
        assert!(index.add(&with_phone("d")).is_ok());
        assert!(index.add(&with_phone("d")).is_ok());
        assert_eq!(holders(&index), ["c", "d"]);
        index.remove("c");
        index.remove("d");
        assert!(holders(&index).is_empty());
        assert_eq!(index.value_count(), 0);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics_and_spans_are_boundaries(text in any::<String>(), clinician in any::<bool>()) {
            let side = if clinician { Side::Clinician } else { Side::Patient };
            let index = index();
            let scan = scan(&index, &text, side, "p1");
            prop_assert!(scan.is_ok());
            if let Ok(scan) = scan {
                for f in scan.verdict().findings() {
                    prop_assert!(f.span.start < f.span.end && f.span.end <= text.len());
                    prop_assert!(text.is_char_boundary(f.span.start) && text.is_char_boundary(f.span.end));
                }
            }
        }

        #[test]
        fn identifier_soup_never_panics(text in "([0-9]{1,4}[-. ()+/]{0,3}|[A-Z][a-z]{1,6} |March |@|x\\.org|é){0,40}") {
            let index = index();
            for side in [Side::Clinician, Side::Patient] {
                let scan = scan(&index, &text, side, "p1");
                prop_assert!(scan.is_ok());
                if let Ok(scan) = scan {
                    for f in scan.verdict().findings() {
                        prop_assert!(text.get(f.span.start..f.span.end).is_some());
                    }
                }
            }
        }
    }
}
