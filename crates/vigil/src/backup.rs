//! Backup files: the same format for both backends, still encrypted.
//!
//! ```text
//! VIGIL-BACKUP 1
//! {"t":"setting",...}        one JSON record per line; bytes in base64
//! ...
//! {"t":"end","records":N,"sha256":"<hex of every byte before this line>"}
//! ```
//! Identity records (`account`, `credentials`, `recovery`, `passkey`,
//! `failures`, then `client`) follow the index rows. Sessions, challenges,
//! refresh tokens, revoked `jti`s and the outbox are never backed up. The
//! audit log comes last (`audit` entries in index order with their terms,
//! `tile`, `checkpoint`, then `head`); backups written before the log
//! existed simply have none of these lines. The access policy's records
//! follow (`policy` versions in order from 1, then `grant`s by id); older
//! backups have none. Privacy monitoring's records close the file: the
//! `monitor` cursor (when it has moved from 0), `explanation`s by index,
//! `case`s and `alert`s by id, `note`s by case and number, then
//! `suppression`s by id, their contents sealed with the audit key; older
//! backups have none. Telehealth consults close the file: `room`s by id,
//! then `invite`s by id (states and secrets sealed by the app); older
//! backups have none. A
//! `passkey` line written before passkeys had a label and use times reads
//! back with an empty label and time 0.
//! A backup holds ciphertext, wrapped data keys and keyed tokens only (and
//! password hashes, sealed TOTP secrets and sealed profiles). Without
//! the key file it is unreadable; keep the two apart.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use model::{KeyOwner, ResourceId, ResourceType, Timestamp, VersionId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use store::{
    AccessExplanation, Account, AccountId, AuditHead, AuditTile, BackupRecord, CaseNote,
    ConsultInvite, ConsultRoom, Credentials, EmergencyGrant, FailureCounter, GrantReview, IndexRow,
    MonitorAlert, MonitorCase, OAuthClient, PolicyVersion, Role, Store, StoredPasskey,
    StoredVersion, Suppression, WrappedKey,
};

const MAGIC: &str = "VIGIL-BACKUP 1";

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum Line {
    Setting {
        name: String,
        value: String,
    },
    Key {
        owner: String,
        kek: String,
        wrapped: String,
    },
    Version {
        rtype: ResourceType,
        id: ResourceId,
        v: u64,
        at: i64,
        deleted: bool,
        owner: String,
        ct: String,
    },
    Index {
        rtype: ResourceType,
        id: ResourceId,
        param: String,
        token: String,
    },
    Account {
        id: String,
        username: String,
        role: String,
        practitioner: Option<ResourceId>,
        patient: Option<ResourceId>,
        active: bool,
        created: i64,
        deactivated: Option<i64>,
        profile: String,
    },
    Credentials {
        account: String,
        password: Option<String>,
        totp: Option<String>,
        totp_step: Option<u64>,
    },
    Recovery {
        account: String,
        hash: String,
    },
    Passkey {
        account: String,
        cred: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        created: i64,
        #[serde(default)]
        last_used: Option<i64>,
        data: String,
    },
    Failures {
        account: String,
        factor: String,
        failures: u32,
        next: Option<i64>,
        disabled: bool,
    },
    Client {
        id: String,
        name: String,
        active: bool,
        created: i64,
        revoked: Option<i64>,
        data: String,
    },
    /// An audit entry: its index, when it was recorded, its sealed bytes and
    /// its `[param, token]` terms.
    Audit {
        i: u64,
        at: i64,
        bytes: String,
        terms: Vec<(String, String)>,
    },
    Tile {
        level: u8,
        i: u64,
        width: u16,
        data: String,
    },
    Checkpoint {
        size: u64,
        note: String,
    },
    Head {
        size: u64,
        state: String,
        checkpoint: Option<String>,
    },
    Policy {
        v: u64,
        text: String,
        author: Option<String>,
        created: i64,
        comment: String,
    },
    /// A break-the-glass grant; the `review_*` fields are all present or all absent.
    Grant {
        id: String,
        account: String,
        patient: ResourceId,
        start: i64,
        expires: i64,
        revoked: Option<i64>,
        reason: String,
        justification: String,
        review_due: i64,
        review_by: Option<String>,
        review_at: Option<i64>,
        review_outcome: Option<String>,
        review_note: Option<String>,
    },
    /// The audit index up to which monitoring has processed the log.
    Monitor {
        processed: u64,
    },
    /// The sealed explanation of the access at audit index `i`.
    Explanation {
        i: u64,
        sealed: String,
    },
    /// A monitoring case; `subject` is a keyed token, `sealed` the summary.
    Case {
        id: String,
        subject: String,
        status: String,
        #[serde(with = "score_text")]
        score: f64,
        assignee: Option<String>,
        opened: i64,
        updated: i64,
        alerts: u32,
        sealed: String,
    },
    Alert {
        id: String,
        case: String,
        kind: String,
        #[serde(with = "score_text")]
        score: f64,
        created: i64,
        sealed: String,
    },
    /// An officer's note on a case, numbered from 1 per case.
    Note {
        case: String,
        seq: u64,
        author: String,
        at: i64,
        sealed: String,
    },
    Suppression {
        id: String,
        author: String,
        created: i64,
        revoked: Option<i64>,
        sealed: String,
    },
    /// A consult room; `state` is the app's sealed room.
    Room {
        id: String,
        appointment: ResourceId,
        patient: ResourceId,
        clinician: String,
        practitioner: Option<String>,
        created: i64,
        v: u64,
        status: String,
        state: String,
        start: Option<i64>,
        end: Option<i64>,
    },
    /// An invite into a consult room; `secret` is sealed by the app.
    Invite {
        id: String,
        room: String,
        created: i64,
        expires: i64,
        method: String,
        failures: u32,
        locked: bool,
        verified: Option<i64>,
        revoked: bool,
        secret: String,
    },
    End {
        records: u64,
        sha256: String,
    },
}

/// Monitoring scores as JSON strings (Rust's shortest text that reads back
/// to the same `f64`): with serde_json's `arbitrary_precision`, a number
/// inside an internally tagged enum such as [`Line`] does not read back as
/// an `f64` at all.
mod score_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(score: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(score)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = String::deserialize(d)?;
        let score: f64 = text.parse().map_err(serde::de::Error::custom)?;
        if score.is_finite() {
            Ok(score)
        } else {
            Err(serde::de::Error::custom("a monitoring score is not finite"))
        }
    }
}

fn account_of(s: String) -> anyhow::Result<AccountId> {
    AccountId::new(s).context("invalid account id in backup")
}

fn owner_of(s: &str) -> anyhow::Result<KeyOwner> {
    KeyOwner::from_storage_key(s).with_context(|| "invalid key owner in backup".to_owned())
}

fn to_line(r: BackupRecord) -> Line {
    match r {
        BackupRecord::Setting { name, value } => Line::Setting {
            name,
            value: B64.encode(value),
        },
        BackupRecord::Key(k) => Line::Key {
            owner: k.owner.storage_key(),
            kek: k.kek_id,
            wrapped: B64.encode(k.wrapped),
        },
        BackupRecord::Version(v) => Line::Version {
            rtype: v.rtype,
            id: v.id,
            v: v.version.0,
            at: v.last_updated.0,
            deleted: v.deleted,
            owner: v.key_owner.storage_key(),
            ct: B64.encode(v.ciphertext),
        },
        BackupRecord::Index { rtype, id, row } => Line::Index {
            rtype,
            id,
            param: row.param,
            token: B64.encode(row.token),
        },
        BackupRecord::Account(a) => Line::Account {
            id: a.id.as_str().to_owned(),
            username: a.username,
            role: a.role.as_str().to_owned(),
            practitioner: a.practitioner,
            patient: a.patient,
            active: a.active,
            created: a.created.0,
            deactivated: a.deactivated.map(|t| t.0),
            profile: B64.encode(a.profile),
        },
        BackupRecord::Credentials {
            account,
            credentials: c,
        } => Line::Credentials {
            account: account.as_str().to_owned(),
            password: c.password_hash.map(|p| B64.encode(p)),
            totp: c.totp_secret.map(|t| B64.encode(t)),
            totp_step: c.totp_last_step,
        },
        BackupRecord::RecoveryCode { account, hash } => Line::Recovery {
            account: account.as_str().to_owned(),
            hash: B64.encode(hash),
        },
        BackupRecord::Passkey(p) => Line::Passkey {
            account: p.account.as_str().to_owned(),
            cred: B64.encode(p.credential_id),
            name: p.name,
            created: p.created.0,
            last_used: p.last_used.map(|t| t.0),
            data: B64.encode(p.data),
        },
        BackupRecord::FactorFailures {
            account,
            factor,
            counter,
        } => Line::Failures {
            account: account.as_str().to_owned(),
            factor,
            failures: counter.failures,
            next: counter.next_allowed_at.map(|t| t.0),
            disabled: counter.disabled,
        },
        BackupRecord::Client(c) => Line::Client {
            id: c.client_id,
            name: c.name,
            active: c.active,
            created: c.created.0,
            revoked: c.revoked.map(|t| t.0),
            data: B64.encode(c.data),
        },
        BackupRecord::AuditEntry {
            index,
            recorded,
            bytes,
            terms,
        } => Line::Audit {
            i: index,
            at: recorded.0,
            bytes: B64.encode(bytes),
            terms: terms.into_iter().map(|(p, t)| (p, B64.encode(t))).collect(),
        },
        BackupRecord::AuditTile(t) => Line::Tile {
            level: t.level,
            i: t.index,
            width: t.width,
            data: B64.encode(t.data),
        },
        BackupRecord::AuditCheckpoint { size, note } => Line::Checkpoint { size, note },
        BackupRecord::AuditHead(h) => Line::Head {
            size: h.size,
            state: B64.encode(h.state),
            checkpoint: h.checkpoint,
        },
        BackupRecord::PolicyVersion(p) => Line::Policy {
            v: p.version,
            text: p.text,
            author: p.author.map(|a| a.as_str().to_owned()),
            created: p.created.0,
            comment: p.comment,
        },
        BackupRecord::Grant(g) => {
            let review = g.review;
            Line::Grant {
                id: g.id,
                account: g.account.as_str().to_owned(),
                patient: g.patient,
                start: g.start.0,
                expires: g.expires.0,
                revoked: g.revoked.map(|t| t.0),
                reason: g.reason,
                justification: B64.encode(g.justification),
                review_due: g.review_due.0,
                review_by: review.as_ref().map(|r| r.reviewer.as_str().to_owned()),
                review_at: review.as_ref().map(|r| r.at.0),
                review_outcome: review.as_ref().map(|r| r.outcome.clone()),
                review_note: review.map(|r| B64.encode(r.note)),
            }
        }
        BackupRecord::MonitorCursor(processed) => Line::Monitor { processed },
        BackupRecord::AccessExplanation(e) => Line::Explanation {
            i: e.index,
            sealed: B64.encode(e.sealed),
        },
        BackupRecord::MonitorCase(c) => Line::Case {
            id: c.id,
            subject: B64.encode(c.subject),
            status: c.status,
            score: c.score,
            assignee: c.assignee.map(|a| a.as_str().to_owned()),
            opened: c.opened.0,
            updated: c.updated.0,
            alerts: c.alerts,
            sealed: B64.encode(c.sealed),
        },
        BackupRecord::MonitorAlert(a) => Line::Alert {
            id: a.id,
            case: a.case_id,
            kind: a.kind,
            score: a.score,
            created: a.created.0,
            sealed: B64.encode(a.sealed),
        },
        BackupRecord::CaseNote(n) => Line::Note {
            case: n.case_id,
            seq: n.seq,
            author: n.author.as_str().to_owned(),
            at: n.at.0,
            sealed: B64.encode(n.sealed),
        },
        BackupRecord::Suppression(s) => Line::Suppression {
            id: s.id,
            author: s.author.as_str().to_owned(),
            created: s.created.0,
            revoked: s.revoked.map(|t| t.0),
            sealed: B64.encode(s.sealed),
        },
        BackupRecord::ConsultRoom(r) => Line::Room {
            id: r.id,
            appointment: r.appointment,
            patient: r.patient,
            clinician: r.clinician.as_str().to_owned(),
            practitioner: r.practitioner,
            created: r.created.0,
            v: r.version,
            status: r.status,
            state: B64.encode(r.state),
            start: r.consult_start.map(|t| t.0),
            end: r.consult_end.map(|t| t.0),
        },
        BackupRecord::ConsultInvite(i) => Line::Invite {
            id: i.id,
            room: i.room,
            created: i.created.0,
            expires: i.expires.0,
            method: i.method,
            failures: i.failures,
            locked: i.locked,
            verified: i.verified_at.map(|t| t.0),
            revoked: i.revoked,
            secret: B64.encode(i.secret),
        },
    }
}

fn from_line(l: Line) -> anyhow::Result<Option<BackupRecord>> {
    let b = |s: &str| B64.decode(s).context("invalid base64 in backup");
    Ok(Some(match l {
        Line::Setting { name, value } => BackupRecord::Setting {
            name,
            value: b(&value)?,
        },
        Line::Key {
            owner,
            kek,
            wrapped,
        } => BackupRecord::Key(WrappedKey {
            owner: owner_of(&owner)?,
            kek_id: kek,
            wrapped: b(&wrapped)?,
        }),
        Line::Version {
            rtype,
            id,
            v,
            at,
            deleted,
            owner,
            ct,
        } => BackupRecord::Version(StoredVersion {
            rtype,
            id,
            version: VersionId(v),
            last_updated: Timestamp(at),
            deleted,
            key_owner: owner_of(&owner)?,
            ciphertext: b(&ct)?,
        }),
        Line::Index {
            rtype,
            id,
            param,
            token,
        } => BackupRecord::Index {
            rtype,
            id,
            row: IndexRow {
                param,
                token: b(&token)?,
            },
        },
        Line::Account {
            id,
            username,
            role,
            practitioner,
            patient,
            active,
            created,
            deactivated,
            profile,
        } => BackupRecord::Account(Account {
            id: account_of(id)?,
            username,
            role: Role::parse(&role).context("invalid role in backup")?,
            practitioner,
            patient,
            active,
            created: Timestamp(created),
            deactivated: deactivated.map(Timestamp),
            profile: b(&profile)?,
        }),
        Line::Credentials {
            account,
            password,
            totp,
            totp_step,
        } => BackupRecord::Credentials {
            account: account_of(account)?,
            credentials: Credentials {
                password_hash: password.as_deref().map(b).transpose()?,
                totp_secret: totp.as_deref().map(b).transpose()?,
                totp_last_step: totp_step,
            },
        },
        Line::Recovery { account, hash } => BackupRecord::RecoveryCode {
            account: account_of(account)?,
            hash: b(&hash)?,
        },
        Line::Passkey {
            account,
            cred,
            name,
            created,
            last_used,
            data,
        } => BackupRecord::Passkey(StoredPasskey {
            credential_id: b(&cred)?,
            account: account_of(account)?,
            name,
            created: Timestamp(created),
            last_used: last_used.map(Timestamp),
            data: b(&data)?,
        }),
        Line::Failures {
            account,
            factor,
            failures,
            next,
            disabled,
        } => BackupRecord::FactorFailures {
            account: account_of(account)?,
            factor,
            counter: FailureCounter {
                failures,
                next_allowed_at: next.map(Timestamp),
                disabled,
            },
        },
        Line::Client {
            id,
            name,
            active,
            created,
            revoked,
            data,
        } => BackupRecord::Client(OAuthClient {
            client_id: id,
            name,
            active,
            created: Timestamp(created),
            revoked: revoked.map(Timestamp),
            data: b(&data)?,
        }),
        Line::Audit {
            i,
            at,
            bytes,
            terms,
        } => BackupRecord::AuditEntry {
            index: i,
            recorded: Timestamp(at),
            bytes: b(&bytes)?,
            terms: terms
                .into_iter()
                .map(|(p, t)| Ok((p, b(&t)?)))
                .collect::<anyhow::Result<_>>()?,
        },
        Line::Tile {
            level,
            i,
            width,
            data,
        } => BackupRecord::AuditTile(AuditTile {
            level,
            index: i,
            width,
            data: b(&data)?,
        }),
        Line::Checkpoint { size, note } => BackupRecord::AuditCheckpoint { size, note },
        Line::Head {
            size,
            state,
            checkpoint,
        } => BackupRecord::AuditHead(AuditHead {
            size,
            state: b(&state)?,
            checkpoint,
        }),
        Line::Policy {
            v,
            text,
            author,
            created,
            comment,
        } => BackupRecord::PolicyVersion(PolicyVersion {
            version: v,
            text,
            author: author.map(account_of).transpose()?,
            created: Timestamp(created),
            comment,
        }),
        Line::Grant {
            id,
            account,
            patient,
            start,
            expires,
            revoked,
            reason,
            justification,
            review_due,
            review_by,
            review_at,
            review_outcome,
            review_note,
        } => BackupRecord::Grant(EmergencyGrant {
            id,
            account: account_of(account)?,
            patient,
            start: Timestamp(start),
            expires: Timestamp(expires),
            revoked: revoked.map(Timestamp),
            reason,
            justification: b(&justification)?,
            review_due: Timestamp(review_due),
            review: match (review_by, review_at, review_outcome, review_note) {
                (Some(by), Some(at), Some(outcome), Some(note)) => Some(GrantReview {
                    reviewer: account_of(by)?,
                    at: Timestamp(at),
                    outcome,
                    note: b(&note)?,
                }),
                (None, None, None, None) => None,
                _ => bail!("a grant's review in the backup is incomplete"),
            },
        }),
        Line::Monitor { processed } => BackupRecord::MonitorCursor(processed),
        Line::Explanation { i, sealed } => BackupRecord::AccessExplanation(AccessExplanation {
            index: i,
            sealed: b(&sealed)?,
        }),
        Line::Case {
            id,
            subject,
            status,
            score,
            assignee,
            opened,
            updated,
            alerts,
            sealed,
        } => BackupRecord::MonitorCase(MonitorCase {
            id,
            subject: b(&subject)?,
            status,
            score,
            assignee: assignee.map(account_of).transpose()?,
            opened: Timestamp(opened),
            updated: Timestamp(updated),
            alerts,
            sealed: b(&sealed)?,
        }),
        Line::Alert {
            id,
            case,
            kind,
            score,
            created,
            sealed,
        } => BackupRecord::MonitorAlert(MonitorAlert {
            id,
            case_id: case,
            kind,
            score,
            created: Timestamp(created),
            sealed: b(&sealed)?,
        }),
        Line::Note {
            case,
            seq,
            author,
            at,
            sealed,
        } => BackupRecord::CaseNote(CaseNote {
            case_id: case,
            seq,
            author: account_of(author)?,
            at: Timestamp(at),
            sealed: b(&sealed)?,
        }),
        Line::Suppression {
            id,
            author,
            created,
            revoked,
            sealed,
        } => BackupRecord::Suppression(Suppression {
            id,
            author: account_of(author)?,
            created: Timestamp(created),
            revoked: revoked.map(Timestamp),
            sealed: b(&sealed)?,
        }),
        Line::Room {
            id,
            appointment,
            patient,
            clinician,
            practitioner,
            created,
            v,
            status,
            state,
            start,
            end,
        } => BackupRecord::ConsultRoom(ConsultRoom {
            id,
            appointment,
            patient,
            clinician: account_of(clinician)?,
            practitioner,
            created: Timestamp(created),
            version: v,
            status,
            state: b(&state)?,
            consult_start: start.map(Timestamp),
            consult_end: end.map(Timestamp),
        }),
        Line::Invite {
            id,
            room,
            created,
            expires,
            method,
            failures,
            locked,
            verified,
            revoked,
            secret,
        } => BackupRecord::ConsultInvite(ConsultInvite {
            id,
            room,
            created: Timestamp(created),
            expires: Timestamp(expires),
            method,
            failures,
            locked,
            verified_at: verified.map(Timestamp),
            revoked,
            secret: b(&secret)?,
        }),
        Line::End { .. } => return Ok(None),
    }))
}

/// Writes a consistent backup of `store` to `out` (a new file, mode 0600).
pub async fn backup(
    store: &dyn Store,
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<u64> {
    let tmp = out.with_extension("partial");
    let file = open_new_private(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    let write_line = |w: &mut std::io::BufWriter<std::fs::File>,
                      hasher: &mut Sha256,
                      line: &str|
     -> std::io::Result<()> {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")
    };
    write_line(&mut w, &mut hasher, MAGIC)?;
    let mut failure: Option<anyhow::Error> = None;
    store
        .dump(&mut |rec| {
            if failure.is_some() {
                return Ok(());
            }
            let res = serde_json::to_string(&to_line(rec))
                .map_err(anyhow::Error::from)
                .and_then(|s| write_line(&mut w, &mut hasher, &s).map_err(anyhow::Error::from));
            match res {
                Ok(()) => {
                    count += 1;
                    if count.is_multiple_of(1000) {
                        progress(count);
                    }
                }
                Err(e) => failure = Some(e),
            }
            Ok(())
        })
        .await
        .context("reading the store")?;
    if let Some(e) = failure {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context("writing the backup"));
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let end = serde_json::to_string(&Line::End {
        records: count,
        sha256: digest,
    })?;
    w.write_all(end.as_bytes())?;
    w.write_all(b"\n")?;
    let file = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("flushing the backup: {e}"))?;
    file.sync_all()?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("moving the backup to {}", out.display()))?;
    progress(count);
    Ok(count)
}

/// Reads and verifies a backup file completely before anything is restored.
pub fn read_backup(path: &Path) -> anyhow::Result<Vec<BackupRecord>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut lines = std::io::BufReader::new(f).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    if first != MAGIC {
        bail!("{} is not a Vigil backup", path.display());
    }
    let mut hasher = Sha256::new();
    hasher.update(first.as_bytes());
    hasher.update(b"\n");
    let mut records = Vec::new();
    let mut ended = false;
    for line in lines {
        let line = line?;
        if ended {
            bail!("data after the end of the backup");
        }
        let parsed: Line = serde_json::from_str(&line).context("a backup line is not valid")?;
        if let Line::End { records: n, sha256 } = &parsed {
            let digest: String = hasher
                .clone()
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if &digest != sha256 || *n != records.len() as u64 {
                bail!("the backup is damaged (checksum or record count mismatch)");
            }
            ended = true;
            continue;
        }
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
        if let Some(r) = from_line(parsed)? {
            records.push(r);
        }
    }
    if !ended {
        bail!("the backup is truncated (no end record)");
    }
    Ok(records)
}

#[cfg(unix)]
fn open_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_records_survive_a_backup_line() {
        let account = AccountId::from_bytes([7; 16]);
        let records = vec![
            BackupRecord::Account(Account {
                id: account.clone(),
                username: "Alice".to_owned(),
                role: Role::PrivacyOfficer,
                practitioner: Some(ResourceId::new("pr1").unwrap()),
                patient: None,
                active: false,
                created: Timestamp(1),
                deactivated: Some(Timestamp(2)),
                profile: vec![0, 255],
            }),
            BackupRecord::Credentials {
                account: account.clone(),
                credentials: Credentials {
                    password_hash: Some(b"$argon2id$".to_vec()),
                    totp_secret: None,
                    totp_last_step: Some(u64::MAX),
                },
            },
            BackupRecord::RecoveryCode {
                account: account.clone(),
                hash: vec![1, 2],
            },
            BackupRecord::Passkey(StoredPasskey {
                credential_id: vec![3],
                account: account.clone(),
                name: "work laptop".to_owned(),
                created: Timestamp(3),
                last_used: Some(Timestamp(4)),
                data: vec![],
            }),
            BackupRecord::FactorFailures {
                account: account.clone(),
                factor: "totp".to_owned(),
                counter: FailureCounter {
                    failures: 100,
                    next_allowed_at: None,
                    disabled: true,
                },
            },
            BackupRecord::Client(OAuthClient {
                client_id: "smart.app-1".to_owned(),
                name: "Growth charts".to_owned(),
                active: false,
                created: Timestamp(5),
                revoked: Some(Timestamp(6)),
                data: b"{}".to_vec(),
            }),
        ];
        for r in records {
            let json = serde_json::to_string(&to_line(r.clone())).unwrap();
            let back: Line = serde_json::from_str(&json).unwrap();
            assert_eq!(from_line(back).unwrap(), Some(r), "{json}");
        }
    }
    #[test]
    fn audit_records_survive_a_backup_line() {
        let records = vec![
            BackupRecord::AuditEntry {
                index: 7,
                recorded: Timestamp(-1),
                bytes: vec![0, 1, 255],
                terms: vec![
                    ("patient".to_owned(), vec![0, 9]),
                    ("who".to_owned(), vec![]),
                ],
            },
            BackupRecord::AuditTile(AuditTile {
                level: 2,
                index: u64::MAX,
                width: 256,
                data: vec![5; 64],
            }),
            BackupRecord::AuditCheckpoint {
                size: 8,
                note: "vigil/audit\n8\nAAA=\n\n— sig\n".to_owned(),
            },
            BackupRecord::AuditHead(AuditHead {
                size: 8,
                state: vec![1, 2, 3],
                checkpoint: None,
            }),
        ];
        for r in records {
            let json = serde_json::to_string(&to_line(r.clone())).unwrap();
            let back: Line = serde_json::from_str(&json).unwrap();
            assert_eq!(from_line(back).unwrap(), Some(r), "{json}");
        }
    }

    #[test]
    fn monitoring_records_survive_a_backup_line() {
        let officer = AccountId::from_bytes([9; 16]);
        let mut records = vec![
            BackupRecord::MonitorCursor(u64::MAX),
            BackupRecord::AccessExplanation(AccessExplanation {
                index: 0,
                sealed: vec![0, 255],
            }),
            BackupRecord::CaseNote(CaseNote {
                case_id: "c1".to_owned(),
                seq: 2,
                author: officer.clone(),
                at: Timestamp(-5),
                sealed: vec![],
            }),
            BackupRecord::Suppression(Suppression {
                id: "s1".to_owned(),
                author: officer.clone(),
                created: Timestamp(1),
                revoked: Some(Timestamp(2)),
                sealed: vec![7],
            }),
        ];
        // Scores come back to the bit, awkward ones included.
        for score in [0.1 + 0.2, 1e-300, f64::MAX, -2.5, 0.0, f64::MIN_POSITIVE] {
            records.push(BackupRecord::MonitorCase(MonitorCase {
                id: "c1".to_owned(),
                subject: vec![1, 2, 3],
                status: "follow_up".to_owned(),
                score,
                assignee: Some(officer.clone()),
                opened: Timestamp(1),
                updated: Timestamp(2),
                alerts: u32::MAX,
                sealed: vec![0],
            }));
            records.push(BackupRecord::MonitorAlert(MonitorAlert {
                id: "a1".to_owned(),
                case_id: "c1".to_owned(),
                kind: "family".to_owned(),
                score,
                created: Timestamp(3),
                sealed: vec![4],
            }));
        }
        for r in records {
            let json = serde_json::to_string(&to_line(r.clone())).unwrap();
            let back: Line = serde_json::from_str(&json).unwrap();
            let back = from_line(back).unwrap().unwrap();
            let score = |r: &BackupRecord| match r {
                BackupRecord::MonitorCase(c) => Some(c.score.to_bits()),
                BackupRecord::MonitorAlert(a) => Some(a.score.to_bits()),
                _ => None,
            };
            assert_eq!(score(&back), score(&r), "{json}");
            assert_eq!(back, r, "{json}");
        }
    }

    #[test]
    fn a_passkey_line_from_before_labels_still_reads() {
        let account = AccountId::from_bytes([7; 16]);
        let json = format!(r#"{{"t":"passkey","account":"{account}","cred":"Aw==","data":""}}"#);
        let line: Line = serde_json::from_str(&json).unwrap();
        assert_eq!(
            from_line(line).unwrap(),
            Some(BackupRecord::Passkey(StoredPasskey {
                credential_id: vec![3],
                account,
                name: String::new(),
                created: Timestamp(0),
                last_used: None,
                data: Vec::new(),
            }))
        );
    }
}
