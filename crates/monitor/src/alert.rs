//! What the monitor emits: alerts, in the shape `vigil monitor scan` writes
//! (one JSON object per line, highest score first).

use serde::{Deserialize, Serialize};

/// The kind of an alert: which detector's signal leads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[serde(rename = "self")]
    SelfAccess,
    Family,
    Coworker,
    Neighbour,
    Vip,
    Deceased,
    Volume,
    AfterHours,
    Terminated,
    BreakGlass,
    OutsideConsult,
    Unexplained,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 12] = [
        Kind::SelfAccess,
        Kind::Family,
        Kind::Coworker,
        Kind::Neighbour,
        Kind::Vip,
        Kind::Deceased,
        Kind::Volume,
        Kind::AfterHours,
        Kind::Terminated,
        Kind::BreakGlass,
        Kind::OutsideConsult,
        Kind::Unexplained,
    ];

    /// The output spelling (`self`, `family`, …, `outside_consult`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SelfAccess => "self",
            Kind::Family => "family",
            Kind::Coworker => "coworker",
            Kind::Neighbour => "neighbour",
            Kind::Vip => "vip",
            Kind::Deceased => "deceased",
            Kind::Volume => "volume",
            Kind::AfterHours => "after_hours",
            Kind::Terminated => "terminated",
            Kind::BreakGlass => "break_glass",
            Kind::OutsideConsult => "outside_consult",
            Kind::Unexplained => "unexplained",
        }
    }

    /// Parses the output spelling.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One alert as written by `vigil monitor scan`: ids as in the input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub alert_id: String,
    pub staff_id: String,
    pub patient_ids: Vec<String>,
    pub event_ids: Vec<String>,
    pub kind: Kind,
    /// Higher is riskier; only the order matters.
    pub score: f64,
    pub reason: String,
}
