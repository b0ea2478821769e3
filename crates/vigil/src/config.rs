//! Configuration: a TOML file, then environment variables, then flags.
//!
//! | setting | TOML key | environment | flag |
//! |---|---|---|---|
//! | data directory (SQLite) | `data_dir` | `VIGIL_DATA_DIR` | `--data-dir` |
//! | PostgreSQL URL | `database_url` | `VIGIL_DATABASE_URL` | `--database-url` |
//! | listen address | `listen` | `VIGIL_LISTEN` | `--listen` |
//! | key file path | `key_file` | `VIGIL_KEY_FILE` | `--key-file` |
//! | key file contents (instead of a path) | – | `VIGIL_KEYS` | – |
//! | public FHIR base URL | `public_url` | `VIGIL_PUBLIC_URL` | – |
//! | referential integrity | `fhir.referential_integrity` | `VIGIL_REFERENTIAL_INTEGRITY` | – |
//! | run without durability settings | `allow_unsafe_durability` | `VIGIL_ALLOW_UNSAFE_DURABILITY` | – |
//! | bootstrap admin token | – | `VIGIL_BOOTSTRAP_TOKEN` | – |
//! | requests in flight | `max_concurrent_requests` | – | – |
//! | limits | `[fhir.limits]` | – | – |
//! | TLS certificate chain (PEM) | `tls_cert` | `VIGIL_TLS_CERT` | `--tls-cert` |
//! | TLS private key (PEM) | `tls_key` | `VIGIL_TLS_KEY` | `--tls-key` |
//! | trusted reverse proxies (CIDRs) | `proxy.trusted` | `VIGIL_TRUSTED_PROXIES` | – |
//! | their forwarding header | `proxy.header` | – | – |
//! | SMTP relay for the outbox | `[smtp]` | `VIGIL_SMTP_PASSWORD` | – |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;
use store::Store;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub key_file: Option<PathBuf>,
    pub public_url: Option<String>,
    pub allow_unsafe_durability: bool,
    /// Requests handled at once; more wait in line (default 512).
    pub max_concurrent_requests: Option<usize>,
    pub fhir: app::Config,
    /// PEM certificate chain; with `tls_key`, `serve` speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    pub proxy: ProxyConfig,
    pub smtp: Option<SmtpConfig>,
    pub identity: app::IdentityConfig,
    /// `[policy]`: relationship windows, training, grant lengths, the facts cache.
    pub policy: app::PolicyConfig,
    /// `[consult]`: STUN/TURN servers, the TURN secret, invite and grace lengths.
    pub consult: app::telehealth::ConsultConfig,
}

/// `[proxy]`: the reverse proxies whose forwarding header is believed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// CIDR blocks, IPv4 or IPv6 (`10.0.0.0/8`, `::1/128`).
    pub trusted: Vec<String>,
    /// `x-forwarded-for` (default) or `forwarded` (RFC 7239).
    pub header: Option<String>,
}

/// `[smtp]`: the relay the outbox is delivered through.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub relay: String,
    /// Default: 587 with STARTTLS, 465 with TLS, 25 without.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    pub username: Option<String>,
    /// Or `VIGIL_SMTP_PASSWORD`, which wins.
    pub password: Option<String>,
    /// The `From` address, e.g. `Vigil <vigil@clinic.example>`.
    pub from: String,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("relay", &self.relay)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .finish()
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required, never optional).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: only for a relay on the same machine, and tests.
    None,
}

/// Where `serve` finds its TLS certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub listen: String,
    pub key_source: crypto::KeyFileSource,
    pub public_url: Option<String>,
    pub allow_unsafe_durability: bool,
    pub max_concurrent_requests: usize,
    pub fhir: app::Config,
    pub identity: app::IdentityConfig,
    /// HTTPS when set.
    pub tls: Option<TlsFiles>,
    pub proxies: web::TrustedProxies,
    pub smtp: Option<SmtpConfig>,
    pub consult: app::telehealth::ConsultConfig,
}

/// Command-line values that override the file and the environment
/// (clap already folds the environment variables into these).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub key_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

fn env_bool(name: &str) -> anyhow::Result<Option<bool>> {
    match env(name).as_deref() {
        None => Ok(None),
        Some("1" | "true" | "yes" | "on") => Ok(Some(true)),
        Some("0" | "false" | "no" | "off") => Ok(Some(false)),
        Some(_) => bail!("{name} must be true or false"),
    }
}

pub fn load(o: &Overrides) -> anyhow::Result<Settings> {
    let file: FileConfig = match &o.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let data_dir = o
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./vigil-data"));
    let key_source = match (o.key_file.clone().or(file.key_file), env("VIGIL_KEYS")) {
        (Some(p), _) => crypto::KeyFileSource::Path(p),
        (None, Some(inline)) => crypto::KeyFileSource::Inline(inline),
        (None, None) => crypto::KeyFileSource::Path(data_dir.join("vigil-keys.toml")),
    };
    let mut fhir = file.fhir;
    fhir.policy = file.policy;
    if let Some(b) = env_bool("VIGIL_REFERENTIAL_INTEGRITY")? {
        fhir.referential_integrity = b;
    }
    let tls = match (
        o.tls_cert.clone().or(file.tls_cert),
        o.tls_key.clone().or(file.tls_key),
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => bail!(
            "a TLS certificate was given without its private key (set both --tls-cert and --tls-key, or neither)"
        ),
        (None, Some(_)) => bail!(
            "a TLS private key was given without its certificate (set both --tls-cert and --tls-key, or neither)"
        ),
    };
    let trusted: Vec<String> = match env("VIGIL_TRUSTED_PROXIES") {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        None => file.proxy.trusted,
    };
    let header = match &file.proxy.header {
        Some(h) => h.parse().context("[proxy] header")?,
        None => web::client_addr::ForwardedHeader::default(),
    };
    let proxies = web::TrustedProxies::new(&trusted, header).context("trusted proxies")?;
    let mut consult = file.consult;
    if let Some(secret) = env("VIGIL_TURN_SECRET") {
        consult.turn_secret = Some(secret);
    }
    if consult.turn_ttl_secs <= 0 || consult.turn_ttl_secs > 24 * 3600 {
        bail!("[consult] turn_ttl_secs must be 1 to 86400");
    }
    if consult.invite_ttl_secs < 60 || consult.invite_ttl_secs > 30 * 24 * 3600 {
        bail!("[consult] invite_ttl_secs must be 60 to 2592000");
    }
    let mut smtp = file.smtp;
    if let (Some(smtp), Some(pw)) = (smtp.as_mut(), env("VIGIL_SMTP_PASSWORD")) {
        smtp.password = Some(pw);
    }
    Ok(Settings {
        database_url: o.database_url.clone().or(file.database_url),
        listen: o
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_owned()),
        key_source,
        public_url: env("VIGIL_PUBLIC_URL").or(file.public_url),
        max_concurrent_requests: file.max_concurrent_requests.unwrap_or(512).max(1),
        allow_unsafe_durability: env_bool("VIGIL_ALLOW_UNSAFE_DURABILITY")?
            .unwrap_or(file.allow_unsafe_durability),
        fhir,
        identity: file.identity,
        data_dir,
        tls,
        proxies,
        smtp,
        consult,
    })
}

/// Opens (and migrates) the configured store, and checks its durability settings.
pub async fn open_store(s: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match &s.database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let opts = store_postgres::PgOptions {
                allow_unsafe_durability: s.allow_unsafe_durability,
                ..Default::default()
            };
            Arc::new(
                store_postgres::PgStore::connect(url, opts)
                    .await
                    .context("connecting to PostgreSQL")?,
            )
        }
        Some(_) => {
            bail!("--database-url must be a postgres:// URL (SQLite is configured with --data-dir)")
        }
        None => {
            create_private_dir(&s.data_dir)?;
            let opts = store_sqlite::SqliteOptions {
                allow_unsafe_durability: s.allow_unsafe_durability,
                ..Default::default()
            };
            Arc::new(
                store_sqlite::SqliteStore::open(&s.data_dir.join("vigil.db"), opts)
                    .await
                    .context("opening SQLite")?,
            )
        }
    };
    store.migrate().await.context("running migrations")?;
    if s.allow_unsafe_durability {
        tracing::warn!("durability checks are switched off (allow_unsafe_durability)");
    } else {
        store
            .check_durability()
            .await
            .context("refusing to start")?;
    }
    Ok(store)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}
