//! Signaling over the consult WebSocket: the messages, their limits, and
//! who receives what.
//!
//! Messages are JSON objects with a `type` tag. Client messages are parsed
//! strictly: the whole frame and each field have a size limit, and unknown
//! types or fields are refused. [`route`] decides recipients from the
//! [`Room`]: media signaling flows only between admitted participants, and
//! a waiting participant learns nothing but its own status.
//!
//! Chat text and file offers go through Vigil: the caller stores them and
//! runs data-loss prevention *before* calling [`route`], which only decides
//! who receives them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::room::{CompanionKind, Role, Room, RoomEvent, RoomState, Status};
use crate::turn::IceServer;

/// The largest SDP accepted in an offer or answer.
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// The largest ICE candidate line accepted.
pub const MAX_CANDIDATE_LEN: usize = 2 * 1024;
/// The largest chat message, in bytes of UTF-8.
pub const MAX_CHAT_LEN: usize = 4 * 1024;
/// The longest file name offered.
pub const MAX_FILE_NAME_LEN: usize = 255;
/// The longest MIME type offered.
pub const MAX_MIME_LEN: usize = 127;
/// The longest id (participant, file, `sdpMid`) accepted.
pub const MAX_ID_LEN: usize = 64;
/// A frame limit that fits the largest SDP with room for JSON escaping.
pub const DEFAULT_MAX_FRAME_LEN: usize = MAX_SDP_LEN + 8 * 1024;

/// What a browser may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    Offer {
        to: String,
        sdp: String,
    },
    Answer {
        to: String,
        sdp: String,
    },
    IceCandidate {
        to: String,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_m_line_index: Option<u16>,
    },
    Chat {
        text: String,
        /// The clinician sends a blocked message anyway, saying why.
        override_reason: Option<String>,
    },
    FileOffer {
        id: String,
        name: String,
        size: u64,
        mime: String,
    },
    /// Room commands: only the room's clinician may send them (the room's
    /// state machine refuses anyone else).
    Admit {
        participant: String,
    },
    Deny {
        participant: String,
    },
    Lock,
    Unlock,
    End,
    Leave,
    Ping,
    Pong,
}

/// What Vigil sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    Admitted,
    Waiting,
    Denied,
    Ended,
    IceServers {
        ice_servers: Vec<IceServer>,
    },
    PeerJoined {
        participant: String,
    },
    PeerLeft {
        participant: String,
    },
    Offer {
        from: String,
        sdp: String,
    },
    Answer {
        from: String,
        sdp: String,
    },
    IceCandidate {
        from: String,
        candidate: String,
        #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        #[serde(
            rename = "sdpMLineIndex",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        sdp_m_line_index: Option<u16>,
    },
    Chat {
        from: String,
        text: String,
    },
    FileOffer {
        from: String,
        id: String,
        name: String,
        size: u64,
        mime: String,
    },
    /// The sender's own chat message was blocked; `lesson` names the page
    /// that explains why, `kinds` what was found (never the values).
    ChatBlocked {
        lesson: String,
        kinds: Vec<String>,
    },
    /// The sender's own chat message was delivered (and stored).
    ChatSent {
        text: String,
    },
    /// For the clinician: everyone in the room and their status.
    Roster {
        locked: bool,
        participants: Vec<RosterEntry>,
    },
    Ping,
    Pong,
    /// A generic error code; never contains PHI or internal detail.
    Error {
        code: String,
    },
}

/// One line of the clinician's roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub id: String,
    /// `clinician`, `patient`, `interpreter` or `family`.
    pub role: String,
    /// `waiting`, `admitted`, `left` or `removed`.
    pub status: String,
    pub connected: bool,
}

/// The roster of `room` (for its clinician).
pub fn roster(room: &Room) -> ServerMsg {
    let participants = room
        .participants
        .iter()
        .map(|p| RosterEntry {
            id: p.id.clone(),
            role: match p.role {
                Role::Clinician => "clinician",
                Role::Patient => "patient",
                Role::Companion(CompanionKind::Interpreter) => "interpreter",
                Role::Companion(CompanionKind::Family) => "family",
            }
            .to_owned(),
            status: match p.status {
                Status::Waiting => "waiting",
                Status::Admitted => "admitted",
                Status::Left => "left",
                Status::Removed => "removed",
            }
            .to_owned(),
            connected: p.connected,
        })
        .collect();
    ServerMsg::Roster {
        locked: room.state == RoomState::Locked,
        participants,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    #[error("message too large")]
    TooLarge,
    #[error("message is not a JSON object with a known type")]
    Malformed,
    #[error("unknown message type")]
    UnknownType,
    #[error("unknown or missing field")]
    BadFields,
    #[error("field too long: {0}")]
    FieldTooLong(&'static str),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SdpBody {
    to: String,
    sdp: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateBody {
    to: String,
    candidate: String,
    #[serde(rename = "sdpMid", default)]
    sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", default)]
    sdp_m_line_index: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatBody {
    text: String,
    #[serde(default)]
    override_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParticipantBody {
    participant: String,
}

/// The longest reason for sending a blocked message anyway.
pub const MAX_OVERRIDE_REASON_LEN: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBody {
    id: String,
    name: String,
    size: u64,
    mime: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn body<T: for<'de> Deserialize<'de>>(rest: Map<String, Value>) -> Result<T, SignalError> {
    serde_json::from_value(Value::Object(rest)).map_err(|_| SignalError::BadFields)
}

fn limit(field: &'static str, value: &str, max: usize) -> Result<(), SignalError> {
    if value.len() > max {
        Err(SignalError::FieldTooLong(field))
    } else {
        Ok(())
    }
}

/// Parses one client frame of at most `max_len` bytes (see
/// [`DEFAULT_MAX_FRAME_LEN`]).
///
/// The `type` is read first and the rest decoded into that type's exact
/// fields; this (rather than a serde-tagged enum) keeps `deny_unknown_fields`
/// effective and numbers exact under serde_json's `arbitrary_precision`.
pub fn parse_client(bytes: &[u8], max_len: usize) -> Result<ClientMsg, SignalError> {
    if bytes.len() > max_len {
        return Err(SignalError::TooLarge);
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|_| SignalError::Malformed)?;
    let Value::Object(mut rest) = value else {
        return Err(SignalError::Malformed);
    };
    let Some(Value::String(kind)) = rest.remove("type") else {
        return Err(SignalError::Malformed);
    };
    let msg = match kind.as_str() {
        "offer" | "answer" => {
            let b: SdpBody = body(rest)?;
            limit("to", &b.to, MAX_ID_LEN)?;
            limit("sdp", &b.sdp, MAX_SDP_LEN)?;
            if kind == "offer" {
                ClientMsg::Offer {
                    to: b.to,
                    sdp: b.sdp,
                }
            } else {
                ClientMsg::Answer {
                    to: b.to,
                    sdp: b.sdp,
                }
            }
        }
        "ice-candidate" => {
            let b: CandidateBody = body(rest)?;
            limit("to", &b.to, MAX_ID_LEN)?;
            limit("candidate", &b.candidate, MAX_CANDIDATE_LEN)?;
            limit("sdpMid", b.sdp_mid.as_deref().unwrap_or(""), MAX_ID_LEN)?;
            ClientMsg::IceCandidate {
                to: b.to,
                candidate: b.candidate,
                sdp_mid: b.sdp_mid,
                sdp_m_line_index: b.sdp_m_line_index,
            }
        }
        "chat" => {
            let b: ChatBody = body(rest)?;
            limit("text", &b.text, MAX_CHAT_LEN)?;
            limit(
                "override_reason",
                b.override_reason.as_deref().unwrap_or(""),
                MAX_OVERRIDE_REASON_LEN,
            )?;
            ClientMsg::Chat {
                text: b.text,
                override_reason: b.override_reason,
            }
        }
        "admit" | "deny" => {
            let b: ParticipantBody = body(rest)?;
            limit("participant", &b.participant, MAX_ID_LEN)?;
            if kind == "admit" {
                ClientMsg::Admit {
                    participant: b.participant,
                }
            } else {
                ClientMsg::Deny {
                    participant: b.participant,
                }
            }
        }
        "file-offer" => {
            let b: FileBody = body(rest)?;
            limit("id", &b.id, MAX_ID_LEN)?;
            limit("name", &b.name, MAX_FILE_NAME_LEN)?;
            limit("mime", &b.mime, MAX_MIME_LEN)?;
            ClientMsg::FileOffer {
                id: b.id,
                name: b.name,
                size: b.size,
                mime: b.mime,
            }
        }
        "leave" | "ping" | "pong" | "lock" | "unlock" | "end" => {
            let Empty {} = body(rest)?;
            match kind.as_str() {
                "leave" => ClientMsg::Leave,
                "ping" => ClientMsg::Ping,
                "lock" => ClientMsg::Lock,
                "unlock" => ClientMsg::Unlock,
                "end" => ClientMsg::End,
                _ => ClientMsg::Pong,
            }
        }
        _ => return Err(SignalError::UnknownType),
    };
    Ok(msg)
}

/// Whom to deliver `msg` from `from` to, and as what.
///
/// - From someone not present in the room: an error to the sender only.
/// - From a waiting participant: `ping` gets `pong`; everything else gets
///   `waiting` back and nothing is relayed.
/// - From an admitted participant: offers, answers and candidates go to the
///   named peer only if that peer is admitted and not the sender (else an
///   error to the sender); chat and file offers go to every other admitted
///   participant (after the caller's DLP); `leave` yields nothing here (the
///   caller runs [`Room::leave`] and [`notify`]).
pub fn route(room: &Room, from: &str, msg: ClientMsg) -> Vec<(String, ServerMsg)> {
    let reply = |m: ServerMsg| vec![(from.to_owned(), m)];
    let error = |code: &str| {
        reply(ServerMsg::Error {
            code: code.to_owned(),
        })
    };
    let Some(sender) = room.participant(from).filter(|p| p.is_present()) else {
        return error("not-in-room");
    };
    if !sender.is_admitted() {
        return match msg {
            ClientMsg::Ping => reply(ServerMsg::Pong),
            ClientMsg::Leave | ClientMsg::Pong => Vec::new(),
            _ => reply(ServerMsg::Waiting),
        };
    }
    let to_peer = |to: &str, m: ServerMsg| {
        if to != from && room.is_admitted(to) {
            vec![(to.to_owned(), m)]
        } else {
            error("peer-unavailable")
        }
    };
    let others = |m: ServerMsg| -> Vec<(String, ServerMsg)> {
        room.participants
            .iter()
            .filter(|p| p.id != from && p.is_admitted())
            .map(|p| (p.id.clone(), m.clone()))
            .collect()
    };
    let from_s = from.to_owned();
    match msg {
        ClientMsg::Offer { to, sdp } => to_peer(&to, ServerMsg::Offer { from: from_s, sdp }),
        ClientMsg::Answer { to, sdp } => to_peer(&to, ServerMsg::Answer { from: from_s, sdp }),
        ClientMsg::IceCandidate {
            to,
            candidate,
            sdp_mid,
            sdp_m_line_index,
        } => to_peer(
            &to,
            ServerMsg::IceCandidate {
                from: from_s,
                candidate,
                sdp_mid,
                sdp_m_line_index,
            },
        ),
        ClientMsg::Chat { text, .. } => others(ServerMsg::Chat { from: from_s, text }),
        ClientMsg::FileOffer {
            id,
            name,
            size,
            mime,
        } => others(ServerMsg::FileOffer {
            from: from_s,
            id,
            name,
            size,
            mime,
        }),
        ClientMsg::Ping => reply(ServerMsg::Pong),
        // Room commands go to the room's state machine, not to peers.
        ClientMsg::Admit { .. }
        | ClientMsg::Deny { .. }
        | ClientMsg::Lock
        | ClientMsg::Unlock
        | ClientMsg::End
        | ClientMsg::Leave
        | ClientMsg::Pong => Vec::new(),
    }
}

/// The pushes that follow room events (`room` is the room *after* them):
/// each participant learns its own status, and admitted participants learn
/// who joined or left. Waiting participants are never told about peers.
pub fn notify(room: &Room, events: &[RoomEvent]) -> Vec<(String, ServerMsg)> {
    let admitted_except = |who: &str, m: ServerMsg| -> Vec<(String, ServerMsg)> {
        room.participants
            .iter()
            .filter(|p| p.id != who && p.is_admitted())
            .map(|p| (p.id.clone(), m.clone()))
            .collect()
    };
    let mut out = Vec::new();
    for event in events {
        match event {
            RoomEvent::CheckedIn { participant, .. } => {
                out.push((participant.clone(), ServerMsg::Waiting));
            }
            RoomEvent::Admitted { participant, .. } => {
                out.push((participant.clone(), ServerMsg::Admitted));
                out.extend(admitted_except(
                    participant,
                    ServerMsg::PeerJoined {
                        participant: participant.clone(),
                    },
                ));
            }
            RoomEvent::Denied { participant, .. } => {
                out.push((participant.clone(), ServerMsg::Denied));
                out.extend(admitted_except(
                    participant,
                    ServerMsg::PeerLeft {
                        participant: participant.clone(),
                    },
                ));
            }
            RoomEvent::Left { participant } => {
                out.extend(admitted_except(
                    participant,
                    ServerMsg::PeerLeft {
                        participant: participant.clone(),
                    },
                ));
            }
            RoomEvent::ReturnedToWaiting { participant } => {
                out.push((participant.clone(), ServerMsg::Waiting));
                out.extend(admitted_except(
                    participant,
                    ServerMsg::PeerLeft {
                        participant: participant.clone(),
                    },
                ));
            }
            RoomEvent::Ended { .. } => {
                out.extend(
                    room.participants
                        .iter()
                        .map(|p| (p.id.clone(), ServerMsg::Ended)),
                );
            }
            RoomEvent::Opened { .. }
            | RoomEvent::CompanionApproved { .. }
            | RoomEvent::ConsultStarted { .. }
            | RoomEvent::Locked { .. }
            | RoomEvent::Unlocked { .. }
            | RoomEvent::Disconnected { .. }
            | RoomEvent::Reconnected { .. } => {}
        }
    }
    out
}

/// Whether a WebSocket upgrade's `Origin` header is one of
/// `allowed_origins`, compared as exact scheme, host and port (the default
/// port made explicit, host case-insensitive). A missing, `null` or
/// unparsable origin is refused.
pub fn origin_allowed(origin_header: Option<&str>, allowed_origins: &[&str]) -> bool {
    let Some(origin) = origin_header.and_then(normalise_origin) else {
        return false;
    };
    allowed_origins
        .iter()
        .filter_map(|a| normalise_origin(a))
        .any(|a| a == origin)
}

/// `scheme://host:port` in lower case, or `None` if `s` is not a bare
/// origin (no path, query, user info or fragment).
fn normalise_origin(s: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = s.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', '\\', ' ']) {
        return None;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = match after {
            "" => default_port,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        (format!("[{}]", addr.to_ascii_lowercase()), port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (h.to_ascii_lowercase(), p.parse().ok()?)
            }
            None => (rest.to_ascii_lowercase(), default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ClientMsg, SignalError> {
        parse_client(s.as_bytes(), DEFAULT_MAX_FRAME_LEN)
    }

    #[test]
    fn parses_each_type() {
        assert_eq!(
            parse(r#"{"type":"offer","to":"p","sdp":"v=0"}"#),
            Ok(ClientMsg::Offer {
                to: "p".into(),
                sdp: "v=0".into()
            })
        );
        assert_eq!(
            parse(
                r#"{"type":"ice-candidate","to":"p","candidate":"candidate:1","sdpMid":"0","sdpMLineIndex":0}"#
            ),
            Ok(ClientMsg::IceCandidate {
                to: "p".into(),
                candidate: "candidate:1".into(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0)
            })
        );
        assert_eq!(
            parse(
                r#"{"type":"file-offer","id":"f1","name":"a.pdf","size":12345,"mime":"application/pdf"}"#
            ),
            Ok(ClientMsg::FileOffer {
                id: "f1".into(),
                name: "a.pdf".into(),
                size: 12345,
                mime: "application/pdf".into()
            })
        );
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMsg::Ping));
        assert_eq!(parse(r#"{"type":"leave"}"#), Ok(ClientMsg::Leave));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse(r#"{"type":"ping","x":1}"#),
            Err(SignalError::BadFields)
        );
        assert_eq!(
            parse(r#"{"type":"chat","text":"hi","to":"x"}"#),
            Err(SignalError::BadFields)
        );
        assert_eq!(
            parse(r#"{"type":"admitted"}"#),
            Err(SignalError::UnknownType)
        );
        assert_eq!(parse(r#"[1]"#), Err(SignalError::Malformed));
        assert_eq!(parse(r#"{"to":"p"}"#), Err(SignalError::Malformed));
        assert_eq!(parse("not json"), Err(SignalError::Malformed));
        let chat = format!(
            r#"{{"type":"chat","text":"{}"}}"#,
            "a".repeat(MAX_CHAT_LEN + 1)
        );
        assert_eq!(parse(&chat), Err(SignalError::FieldTooLong("text")));
        let cand = format!(
            r#"{{"type":"ice-candidate","to":"p","candidate":"{}"}}"#,
            "a".repeat(MAX_CANDIDATE_LEN + 1)
        );
        assert_eq!(parse(&cand), Err(SignalError::FieldTooLong("candidate")));
        let sdp = format!(
            r#"{{"type":"offer","to":"p","sdp":"{}"}}"#,
            "a".repeat(MAX_SDP_LEN + 1)
        );
        assert_eq!(parse(&sdp), Err(SignalError::FieldTooLong("sdp")));
        assert_eq!(parse_client(b"{}", 1), Err(SignalError::TooLarge));
        assert_eq!(
            parse(r#"{"type":"file-offer","id":"f","name":"n","size":-1,"mime":"m"}"#),
            Err(SignalError::BadFields)
        );
    }

    #[test]
    fn server_json_shape() {
        let m = ServerMsg::ChatBlocked {
            lesson: "dlp-other-patient".into(),
            kinds: vec!["phone".into()],
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"chat-blocked","lesson":"dlp-other-patient","kinds":["phone"]}"#
        );
        assert_eq!(
            serde_json::to_string(&ServerMsg::Waiting).unwrap(),
            r#"{"type":"waiting"}"#
        );
    }

    #[test]
    fn origins() {
        let allowed = ["https://vigil.example.org", "http://localhost:8080"];
        for ok in [
            "https://vigil.example.org",
            "https://VIGIL.example.org:443",
            "http://localhost:8080",
        ] {
            assert!(origin_allowed(Some(ok), &allowed), "{ok}");
        }
        for bad in [
            "https://evil.example.org",
            "http://vigil.example.org",
            "https://vigil.example.org:8443",
            "https://vigil.example.org.evil.com",
            "https://vigil.example.org/",
            "http://localhost",
            "null",
            "",
        ] {
            assert!(!origin_allowed(Some(bad), &allowed), "{bad}");
        }
        assert!(!origin_allowed(None, &allowed));
    }
}
