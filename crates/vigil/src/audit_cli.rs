//! `vigil audit`: verify the whole log offline, print an inclusion proof an
//! outside tool can check, and export entries to a SIEM (OCSF API Activity
//! as NDJSON, or RFC 5424 syslog over TCP or TLS with octet counting).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use app::audit::tiles::{TileReader, tiles_for_size};
use app::audit::{Hash, VerifyError};
use app::trail::{Action, Entry};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Entries read per page.
const PAGE: usize = 10_000;
/// The system's CA bundle, the default trust for `tls://` targets.
const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

fn b64(h: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(h)
}

/// The tiles of one tree size, read once from the store and cut to the
/// width a smaller tree asks for.
struct Prefetched(HashMap<(u8, u64), Vec<u8>>);

impl TileReader for Prefetched {
    type Error = String;

    fn tile(&self, level: u8, index: u64, width: u16) -> Result<Vec<u8>, String> {
        self.0
            .get(&(level, index))
            .and_then(|t| t.get(..usize::from(width) * 32))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("tile {level}/{index} is missing"))
    }
}

/// The latest checkpoint, opened: `(size, root, note)`.
async fn head(vigil: &app::Vigil) -> anyhow::Result<Option<(u64, Hash, String)>> {
    let Some(note) = vigil.audit_checkpoint().await? else {
        return Ok(None);
    };
    let c = app::audit::open_checkpoint(&note, vigil.audit_core().verifiers())
        .map_err(|e| anyhow::anyhow!("the latest checkpoint does not verify: {e}"))?;
    Ok(Some((c.size, c.root, note)))
}

/// `vigil audit verify`.
pub async fn verify(vigil: &app::Vigil) -> anyhow::Result<()> {
    let head_note = vigil.audit_checkpoint().await?;
    // The head's size as it claims (verified below with the others).
    let claimed = head_note
        .as_deref()
        .and_then(|n| n.lines().nth(1))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let pb = crate::serve::bar(claimed, "verifying");
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let mut gap = None;
    loop {
        let from = entries.len() as u64;
        let rows = vigil.audit_raw_entries(from, PAGE).await?;
        if rows.is_empty() {
            break;
        }
        for (idx, bytes) in rows {
            let want = entries.len() as u64;
            if idx != want && gap.is_none() {
                gap = Some(want);
            }
            entries.push(bytes);
        }
        pb.set_position(entries.len() as u64);
    }
    let mut checkpoints: Vec<(u64, String)> = Vec::new();
    let mut from = 0u64;
    loop {
        let page = vigil.audit_checkpoints(from, 1000).await?;
        let Some(last) = page.last().map(|(s, _)| *s) else {
            break;
        };
        checkpoints.extend(page);
        from = last + 1;
    }
    if let Some(note) = head_note {
        let size = if claimed > 0 { claimed } else { u64::MAX };
        if !checkpoints.iter().any(|(s, n)| *s == size && *n == note) {
            checkpoints.push((size, note));
        }
    }
    let mut tiles = HashMap::new();
    for id in tiles_for_size(claimed) {
        if let Some(t) = vigil.audit_tile(id.level, id.index, id.width).await? {
            tiles.insert((id.level, id.index), t);
        }
    }
    pb.finish_and_clear();
    if let Some(i) = gap {
        bail!("audit log verification FAILED: entry {i} is missing (the stored indexes skip it)");
    }
    let report = app::audit::verify_log_with_tiles(
        entries.iter().map(Vec::as_slice),
        &checkpoints,
        vigil.audit_core().verifiers(),
        &Prefetched(tiles),
    );
    match report {
        Ok(r) => {
            println!(
                "verified {} entries, {} checkpoints, root {}",
                r.entries,
                r.checkpoints,
                b64(&r.root)
            );
            if r.unsigned_entries() > 0 {
                println!(
                    "({} entries after the latest checkpoint are not covered by a signature)",
                    r.unsigned_entries()
                );
            }
            Ok(())
        }
        Err(e) => bail!("audit log verification FAILED: {}", explain(&e)),
    }
}

fn explain(e: &VerifyError) -> String {
    match e {
        VerifyError::RootMismatch {
            checkpoint_size,
            last_good_size,
            first_bad_index: Some(i),
        } => format!(
            "first bad entry at index {i} (the entries do not give the root signed at size {checkpoint_size}; the log is good up to size {last_good_size})"
        ),
        VerifyError::MissingEntries {
            checkpoint_size,
            entries,
        } => format!(
            "entries missing: a checkpoint signs {checkpoint_size} entries but only {entries} are stored; first missing entry at index {entries}"
        ),
        VerifyError::Checkpoint {
            checkpoint_size,
            error,
        } => format!("bad checkpoint at size {checkpoint_size}: {error}"),
        other => other.to_string(),
    }
}

/// `vigil audit proof INDEX [--size N]`: JSON an outside tool can check
/// (RFC 9162 inclusion proof against the signed checkpoint).
pub async fn proof(vigil: &app::Vigil, index: u64, size: Option<u64>) -> anyhow::Result<()> {
    let Some((head_size, _, head_note)) = head(vigil).await? else {
        bail!("the audit log is empty");
    };
    let size = size.unwrap_or(head_size);
    if index >= size || size > head_size {
        bail!("no entry {index} in a tree of {size} entries (the log has {head_size})");
    }
    let path = vigil.audit_inclusion_proof(index, size).await?;
    let entry = vigil.audit_raw_entries(index, 1).await?;
    let leaf = entry
        .first()
        .filter(|(i, _)| *i == index)
        .map(|(_, b)| app::audit::leaf_hash(b))
        .with_context(|| format!("audit entry {index} is missing"))?;
    let checkpoint = if size == head_size {
        Some(head_note)
    } else {
        vigil
            .audit_checkpoints(size, 1)
            .await?
            .into_iter()
            .find(|(s, _)| *s == size)
            .map(|(_, n)| n)
    };
    let out = json!({
        "index": index,
        "size": size,
        "leaf_hash": b64(&leaf),
        "proof": path.iter().map(|h| b64(h)).collect::<Vec<_>>(),
        "checkpoint": checkpoint,
        "verifier_keys": vigil.audit_verifier_keys(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The export's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// OCSF 1.3 API Activity (class 6003), one JSON object per line.
    Ocsf,
    /// RFC 5424 messages carrying the OCSF JSON.
    Syslog,
}

/// Options of `vigil audit export`.
pub struct ExportOptions {
    pub since: u64,
    pub format: ExportFormat,
    pub to: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub follow: bool,
}

fn activity(a: Action) -> (u8, &'static str) {
    match a {
        Action::C => (1, "Create"),
        Action::R => (2, "Read"),
        Action::U => (3, "Update"),
        Action::D => (4, "Delete"),
        Action::E => (99, "Other"),
    }
}

/// An entry as an OCSF 1.3 API Activity event. The search query is left
/// out: it can hold names, and a SIEM is no place for them.
pub fn ocsf(index: u64, e: &Entry) -> Value {
    let (activity_id, activity_name) = activity(e.action);
    let ok = e.outcome == 0;
    let mut user = serde_json::Map::new();
    if let Some(a) = &e.agent.account {
        user.insert("uid".into(), Value::String(a.clone()));
    }
    if let Some(r) = &e.agent.role {
        user.insert("type".into(), Value::String(r.clone()));
    }
    let mut actor = json!({"user": user, "authorizations": [{"decision": if ok { "allowed" } else { "denied" }}]});
    if let Some(c) = &e.agent.client
        && let Some(o) = actor.as_object_mut()
    {
        o.insert("app_uid".into(), Value::String(c.clone()));
    }
    let mut resources: Vec<Value> = e
        .resources
        .iter()
        .map(|r| json!({"uid": r, "type": r.split('/').next().unwrap_or("")}))
        .collect();
    for p in &e.patients {
        let r = format!("Patient/{p}");
        if !e.resources.contains(&r) {
            resources.push(json!({"uid": r, "type": "Patient"}));
        }
    }
    let mut v = json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": 600_300 + u32::from(activity_id),
        "type_name": format!("API Activity: {activity_name}"),
        "time": e.recorded / 1000,
        "severity_id": if ok { 1 } else { 3 },
        "severity": if ok { "Informational" } else { "Medium" },
        "status_id": if ok { 1 } else { 2 },
        "status": if ok { "Success" } else { "Failure" },
        "metadata": {
            "version": "1.3.0",
            "uid": index.to_string(),
            "sequence": index,
            "log_name": e.source,
            "product": {"name": "Vigil", "vendor_name": "Vigil", "version": env!("CARGO_PKG_VERSION")}
        },
        "actor": actor,
        "api": {"operation": e.subtype, "service": {"name": "FHIR"}},
        "resources": resources,
        "src_endpoint": {},
        "unmapped": {
            "category": e.category,
            "via": e.agent.via,
        }
    });
    if let Some(o) = v.as_object_mut() {
        if let Some(d) = &e.outcome_desc {
            o.insert("status_detail".into(), Value::String(d.clone()));
        }
        if let Some(a) = &e.agent.address {
            o.insert("src_endpoint".into(), json!({"ip": a}));
        } else {
            o.remove("src_endpoint");
        }
        if let Some(r) = &e.request
            && let Some(api) = o.get_mut("api").and_then(Value::as_object_mut)
        {
            api.insert("request".into(), json!({"uid": r}));
        }
        if let Some(m) = o.get_mut("unmapped").and_then(Value::as_object_mut) {
            if let Some(p) = &e.agent.purpose {
                m.insert("purpose_of_use".into(), Value::String(p.clone()));
            }
            if let Some(a) = &e.account {
                m.insert("subject_account".into(), Value::String(a.clone()));
            }
        }
    }
    v
}

/// An RFC 5424 message: facility 13 (log audit), severity informational or
/// warning, the entry index and request id as structured data.
pub fn syslog_message(index: u64, e: &Entry, host: &str) -> String {
    let severity = if e.outcome == 0 { 6 } else { 4 };
    let pri = 13 * 8 + severity;
    let ts = model::Timestamp(e.recorded).to_fhir_instant();
    let sd_value = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace(']', "\\]")
    };
    let request = e
        .request
        .as_deref()
        .map(|r| format!(" request=\"{}\"", sd_value(r)))
        .unwrap_or_default();
    format!(
        "<{pri}>1 {ts} {host} vigil {pid} audit [vigil@32473 index=\"{index}\"{request}] {msg}",
        pid = std::process::id(),
        msg = ocsf(index, e),
    )
}

/// Where exported lines go.
enum Sink {
    Stdout,
    Stream(Box<dyn AsyncWrite + Unpin + Send>),
}

async fn connect(to: &str, ca_file: Option<&Path>) -> anyhow::Result<Sink> {
    if let Some(addr) = to.strip_prefix("tcp://") {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        return Ok(Sink::Stream(Box::new(s)));
    }
    let Some(addr) = to.strip_prefix("tls://") else {
        bail!("--to must be tcp://host:port or tls://host:port");
    };
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .context("--to needs a port")?;
    let ca = ca_file.unwrap_or(Path::new(SYSTEM_CA));
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading the CA certificates {}", ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("reading {}", ca.display()))?)
            .context("adding a CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host} is not a server name"))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr}"))?;
    Ok(Sink::Stream(Box::new(tls)))
}

/// `vigil audit export`.
pub async fn export(vigil: &app::Vigil, o: ExportOptions) -> anyhow::Result<()> {
    let mut sink = match &o.to {
        Some(to) => connect(to, o.ca_file.as_deref()).await?,
        None => Sink::Stdout,
    };
    let host = vigil
        .audit_core()
        .origin
        .split('/')
        .next()
        .filter(|h| !h.is_empty() && h.len() <= 255 && h.is_ascii())
        .unwrap_or("-")
        .to_owned();
    let mut next = o.since;
    loop {
        let rows = vigil.audit_raw_entries(next, 1000).await?;
        for (idx, bytes) in &rows {
            let e = vigil
                .audit_open(bytes)
                .with_context(|| format!("opening audit entry {idx}"))?;
            let line = match o.format {
                ExportFormat::Ocsf => ocsf(*idx, &e).to_string(),
                ExportFormat::Syslog => syslog_message(*idx, &e, &host),
            };
            match &mut sink {
                Sink::Stdout => println!("{line}"),
                Sink::Stream(w) => {
                    let framed = match o.format {
                        // RFC 6587 octet counting: the length, a space, the message.
                        ExportFormat::Syslog => format!("{} {line}", line.len()),
                        ExportFormat::Ocsf => format!("{line}\n"),
                    };
                    w.write_all(framed.as_bytes()).await.context("sending")?;
                }
            }
            next = idx + 1;
        }
        if let Sink::Stream(w) = &mut sink {
            w.flush().await.context("sending")?;
        }
        if rows.is_empty() {
            if !o.follow {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    if let Sink::Stream(w) = &mut sink {
        w.shutdown().await.context("closing the connection")?;
    }
    Ok(())
}
