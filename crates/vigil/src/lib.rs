//! The `vigil` binary: configuration, tracing, backend choice and the CLI verbs.
//! The only crate that reads the environment and uses `anyhow`.

pub mod audit_cli;
pub mod backup;
pub mod bench;
pub mod bench_consult;
pub mod bench_monitor;
pub mod bench_policy;
pub mod config;
pub mod consult_cli;
pub mod mail;
pub mod monitor_cli;
pub mod pgadmin;
pub mod serve;
pub mod tls;
pub mod users;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vigil",
    version,
    about = "Vigil: patient-data protection for telehealth"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// TOML configuration file.
    #[arg(long, env = "VIGIL_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory for the embedded SQLite database (default ./vigil-data).
    #[arg(long, env = "VIGIL_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://…); SQLite under --data-dir when absent.
    #[arg(long, env = "VIGIL_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// The key file (default <data-dir>/vigil-keys.toml). VIGIL_KEYS may hold its contents instead.
    #[arg(long, env = "VIGIL_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs the server.
    Serve {
        /// Seeds a demo clinic (first start only).
        #[arg(long)]
        demo: bool,
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, env = "VIGIL_LISTEN")]
        listen: Option<String>,
        /// PEM certificate chain for HTTPS (with --tls-key).
        #[arg(long, env = "VIGIL_TLS_CERT")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for HTTPS (with --tls-cert).
        #[arg(long, env = "VIGIL_TLS_KEY")]
        tls_key: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Patient data management.
    Patient {
        #[command(subcommand)]
        action: PatientCommand,
    },
    /// Writes a consistent online backup (still encrypted; the key file is not included).
    Backup {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Restores a backup into an empty store.
    Restore {
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// User accounts.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// OAuth clients (SMART apps and backend services).
    Client {
        #[command(subcommand)]
        action: ClientCommand,
    },
    /// Access tokens for scripts.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// The audit log: verify it, prove an entry, export it to a SIEM.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Privacy monitoring of access logs without a server: scan an export,
    /// simulate a hospital, evaluate alerts.
    Monitor {
        #[command(subcommand)]
        action: monitor_cli::MonitorCommand,
    },
    /// Video consultations: check the `[consult]` settings, mint a TURN
    /// credential to test coturn with.
    Consult {
        #[command(subcommand)]
        action: consult_cli::ConsultCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Adds a new key-encryption key and re-wraps every data key under it (online).
    Rotate {
        /// Also remove older KEKs from the key file once no data key uses them.
        #[arg(long)]
        retire_old: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand, Debug)]
pub enum PatientCommand {
    /// Crypto-shreds a patient: destroys their data key and deletes their data.
    Erase {
        id: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Creates an account.
    Add {
        #[arg(long)]
        username: String,
        /// physician, nurse, other-clinical, front-desk, billing, privacy-officer, administrator or patient.
        #[arg(long)]
        role: String,
        /// The Practitioner this workforce account is.
        #[arg(long, conflicts_with = "patient")]
        practitioner: Option<String>,
        /// The Patient this patient account is.
        #[arg(long)]
        patient: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Reads the password from one line of standard input (never from argv).
        #[arg(long, conflicts_with = "send_enrolment")]
        password_stdin: bool,
        /// Puts an enrolment link (set a password and second factor) in the outbox.
        #[arg(long)]
        send_enrolment: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Lists accounts.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Deactivates an account; its sessions and tokens stop working.
    Deactivate {
        username: String,
        #[command(flatten)]
        common: Common,
    },
    /// Removes every second factor of an account (lost device).
    ResetMfa {
        username: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Registers a client: a public app with PKCE, or with --jwks-file a
    /// confidential app or backend service (private_key_jwt).
    Add {
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        redirect_uri: Vec<String>,
        /// The most this client may ever be granted, e.g. "launch/patient patient/*.rs".
        #[arg(long)]
        scope: String,
        /// The client's public keys (a JWK Set, JSON).
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Lists clients.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Revokes a client and its tokens.
    Revoke {
        client_id: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Prints an access token for an account, or with `--service` for a
    /// backend service (no person: `system/` scopes, not decided by the
    /// relationship rules), only the token, for scripts.
    Issue {
        #[arg(long, required_unless_present = "service", conflicts_with = "service")]
        username: Option<String>,
        /// A backend-service token (system scopes) instead of a user's.
        #[arg(long)]
        service: bool,
        /// e.g. "user/Patient.rs", or "system/*.rs" with --service.
        #[arg(long)]
        scope: String,
        /// Lifetime: 900s, 15m, 1h (at most an hour).
        #[arg(long, default_value = "15m")]
        ttl: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recomputes the Merkle tree over every stored entry and checks every
    /// signed checkpoint; names the first bad entry or checkpoint.
    Verify {
        #[command(flatten)]
        common: Common,
    },
    /// Prints an inclusion proof of one entry as JSON (leaf hash, proof, signed checkpoint).
    Proof {
        index: u64,
        /// The tree size to prove against (default: the latest checkpoint).
        #[arg(long)]
        size: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Exports entries (OCSF API Activity) to standard output or a syslog collector.
    Export {
        /// The first entry index to export.
        #[arg(long, default_value_t = 0)]
        since: u64,
        #[arg(long, value_enum, default_value = "ocsf")]
        format: audit_cli::ExportFormat,
        /// tcp://host:port or tls://host:port (syslog: RFC 6587 octet counting).
        #[arg(long)]
        to: Option<String>,
        /// PEM CA certificates for tls:// (default: the system bundle).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Keeps running, sending new entries as they come (polls every second).
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Access-policy decision latency (relationship lookup apart) in a
    /// deployment of 5,000 staff and 100,000 patients, and FHIR reads with
    /// identity, policy, decryption and audit on beside the record store's.
    Policy {
        #[arg(long, default_value_t = 100_000)]
        patients: usize,
        #[arg(long, default_value_t = 5_000)]
        staff: usize,
        /// Decisions sampled.
        #[arg(long, default_value_t = 20_000)]
        decisions: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per HTTP workload.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Durable audit appends/s at 1, 8, 64 and 256 writers beside raw fsync; proofs; verification.
    Audit {
        #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
        writers: Vec<usize>,
        /// Seconds per writer count.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Open-loop runs: total appends/s shared by 256 writers.
        #[arg(long, value_delimiter = ',', default_value = "50000")]
        rates: Vec<u64>,
        /// Entries the log holds before it is verified.
        #[arg(long, default_value_t = 1_000_000)]
        verify_entries: u64,
    },
    /// Sign-in latency (Argon2id) and the per-request cost of checking a token or session.
    Auth {
        #[arg(long, default_value_t = 30)]
        sign_ins: usize,
        #[arg(long, default_value_t = 20_000)]
        checks: usize,
    },
    /// Reads by id and searches over HTTP at 64 connections on SQLite and PostgreSQL.
    Fhir {
        /// Patient counts to measure at.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        patients: Vec<usize>,
        /// Backends: sqlite, postgres.
        #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
        backend: Vec<String>,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per workload.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// PostgreSQL admin URL; a scratch database is created and dropped.
        #[arg(
            long,
            env = "VIGIL_BENCH_PG_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        pg_url: String,
        /// SQLite reader connections (default: the server's default).
        #[arg(long)]
        sqlite_readers: Option<u32>,
    },
    /// Privacy monitoring on one thread: index, learn, explain + detect
    /// (accesses/s, target 1,000,000), CSV parsing apart, peak memory.
    Monitor(bench_monitor::MonitorBenchArgs),
    /// Telehealth consultations: DLP scan throughput (MB/s) with 100,000
    /// patients' identifiers indexed, and signaling messages/s over real
    /// WebSockets (one room, then several at once).
    Consult(bench_consult::ConsultBenchArgs),
}

fn overrides(c: &Common, listen: Option<String>) -> config::Overrides {
    config::Overrides {
        config: c.config.clone(),
        data_dir: c.data_dir.clone(),
        database_url: c.database_url.clone(),
        listen,
        key_file: c.key_file.clone(),
        tls_cert: None,
        tls_key: None,
    }
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            demo,
            listen,
            tls_cert,
            tls_key,
            common,
        } => {
            let s = config::load(&config::Overrides {
                tls_cert,
                tls_key,
                ..overrides(&common, listen)
            })?;
            serve::serve(s, demo).await
        }
        Command::Keys {
            action: KeysCommand::Rotate { retire_old, common },
        } => {
            let s = config::load(&overrides(&common, None))?;
            let crypto::KeyFileSource::Path(path) = &s.key_source else {
                bail!(
                    "key rotation needs a key file path (VIGIL_KEYS holds the keys inline; rotate them where they are kept)"
                );
            };
            let store = config::open_store(&s).await?;
            let total = store.stats().await?.keys;
            let pb = serve::bar(total, "re-wrapping");
            let report = app::keys::rotate(store.as_ref(), path, retire_old, &|done, _| {
                pb.set_position(done)
            })
            .await?;
            pb.finish_and_clear();
            // Recorded in the audit trail as an operator action.
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            vigil
                .audit_event(
                    &app::Principal::Operator,
                    app::trail::Category::Administration,
                    "key-rotation",
                    app::trail::Action::U,
                    None,
                    None,
                )
                .await
                .context("recording the rotation in the audit trail")?;
            println!(
                "New key-encryption key {}; {} data keys re-wrapped; {} older keys retired.",
                report.new_kek_id, report.rewrapped, report.retired
            );
            Ok(())
        }
        Command::Patient {
            action: PatientCommand::Erase { id, common },
        } => {
            let s = config::load(&overrides(&common, None))?;
            let id = model::ResourceId::new(id).context("invalid patient id")?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            let r = vigil.erase_patient(&app::Principal::Operator, &id).await?;
            println!(
                "Patient {id} erased: data key destroyed: {}; {} versions and {} index rows deleted.",
                r.key_destroyed, r.versions_deleted, r.index_rows_deleted
            );
            println!(
                "Backups taken before now still hold the wrapped key until they expire (see README, backup retention)."
            );
            Ok(())
        }
        Command::Backup { out, common } => {
            let s = config::load(&overrides(&common, None))?;
            let store = config::open_store(&s).await?;
            let stats = store.stats().await?;
            let pb = serve::bar(stats.keys + stats.versions + stats.index_rows, "backing up");
            let n = backup::backup(store.as_ref(), &out, &|n| pb.set_position(n)).await?;
            pb.finish_and_clear();
            println!(
                "Backup written to {} ({n} records, encrypted; the key file is not included).",
                out.display()
            );
            Ok(())
        }
        Command::Restore { file, common } => {
            let s = config::load(&overrides(&common, None))?;
            let records = backup::read_backup(&file)?;
            let n = records.len();
            let store = config::open_store(&s).await?;
            store.load(records).await.context("restoring")?;
            store
                .refresh_statistics()
                .await
                .context("refreshing planner statistics")?;
            println!("Restored {n} records from {}.", file.display());
            Ok(())
        }
        Command::User { action } => user(action).await,
        Command::Client { action } => client(action).await,
        Command::Token {
            action:
                TokenCommand::Issue {
                    username,
                    service: _,
                    scope,
                    ttl,
                    common,
                },
        } => {
            let s = config::load(&overrides(&common, None))?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            users::token_issue(&vigil, &s, username.as_deref(), &scope, &ttl).await
        }
        Command::Bench {
            what:
                BenchCommand::Audit {
                    writers,
                    seconds,
                    rates,
                    verify_entries,
                },
        } => {
            bench::run_audit(
                &writers,
                &rates,
                Duration::from_secs(seconds),
                verify_entries,
            )
            .await
        }
        Command::Audit { action } => audit(action).await,
        Command::Monitor {
            action:
                monitor_cli::MonitorCommand::Import {
                    dir,
                    timezone,
                    skip_bad_rows,
                    common,
                },
        } => {
            let open = || async {
                let s = config::load(&overrides(&common, None))?;
                let (vigil, _) = serve::open_vigil(&s, false).await?;
                Ok(vigil)
            };
            monitor_cli::import(open, &dir, &timezone, skip_bad_rows).await
        }
        Command::Monitor { action } => monitor_cli::run(action),
        Command::Consult { action } => consult_cli::run(action),
        Command::Bench {
            what: BenchCommand::Monitor(args),
        } => bench_monitor::run(&args),
        Command::Bench {
            what: BenchCommand::Consult(args),
        } => bench_consult::run(&args).await,
        Command::Bench {
            what:
                BenchCommand::Policy {
                    patients,
                    staff,
                    decisions,
                    connections,
                    seconds,
                },
        } => {
            bench_policy::run(bench_policy::PolicyBenchOptions {
                patients,
                staff,
                decisions: decisions.max(1),
                connections: connections.max(1),
                duration: Duration::from_secs(seconds.max(1)),
            })
            .await
        }
        Command::Bench {
            what: BenchCommand::Auth { sign_ins, checks },
        } => bench::run_auth(sign_ins.max(1), checks.max(1)).await,
        Command::Bench {
            what:
                BenchCommand::Fhir {
                    patients,
                    backend,
                    connections,
                    seconds,
                    pg_url,
                    sqlite_readers,
                },
        } => {
            let backends = backend
                .iter()
                .map(|b| match b.as_str() {
                    "sqlite" => Ok(bench::Backend::Sqlite),
                    "postgres" => Ok(bench::Backend::Postgres),
                    other => bail!("unknown backend {other}"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            bench::run(bench::BenchOptions {
                sizes: patients,
                backends,
                connections,
                duration: Duration::from_secs(seconds),
                pg_admin_url: pg_url,
                sqlite_readers,
            })
            .await
        }
    }
}

fn resource_id(kind: &str, id: Option<String>) -> anyhow::Result<Option<model::ResourceId>> {
    id.map(|i| model::ResourceId::new(i).with_context(|| format!("invalid {kind} id")))
        .transpose()
}

async fn user(action: UserCommand) -> anyhow::Result<()> {
    match action {
        UserCommand::Add {
            username,
            role,
            practitioner,
            patient,
            name,
            email,
            password_stdin,
            send_enrolment,
            common,
        } => {
            let role = store::Role::parse(&role).with_context(|| {
                let all: Vec<String> = store::Role::ALL.iter().map(ToString::to_string).collect();
                format!("unknown role {role:?} (one of {})", all.join(", "))
            })?;
            let account = app::NewAccount {
                username,
                role,
                practitioner: resource_id("Practitioner", practitioner)?,
                patient: resource_id("Patient", patient)?,
                display_name: name,
                email,
            };
            let s = config::load(&overrides(&common, None))?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            users::user_add(
                &vigil,
                &s,
                users::AddUser {
                    account,
                    password_stdin,
                    send_enrolment,
                },
            )
            .await
        }
        UserCommand::List { common } => {
            let s = config::load(&overrides(&common, None))?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            users::user_list(&vigil).await
        }
        UserCommand::Deactivate { username, common } => {
            let s = config::load(&overrides(&common, None))?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            users::user_deactivate(&vigil, &username).await
        }
        UserCommand::ResetMfa { username, common } => {
            let s = config::load(&overrides(&common, None))?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            users::user_reset_mfa(&vigil, &username).await
        }
    }
}

async fn audit(action: AuditCommand) -> anyhow::Result<()> {
    match action {
        AuditCommand::Verify { common } => {
            let s = config::load(&overrides(&common, None))?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            audit_cli::verify(&vigil).await
        }
        AuditCommand::Proof {
            index,
            size,
            common,
        } => {
            let s = config::load(&overrides(&common, None))?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            audit_cli::proof(&vigil, index, size).await
        }
        AuditCommand::Export {
            since,
            format,
            to,
            ca_file,
            follow,
            common,
        } => {
            let s = config::load(&overrides(&common, None))?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            audit_cli::export(
                &vigil,
                audit_cli::ExportOptions {
                    since,
                    format,
                    to,
                    ca_file,
                    follow,
                },
            )
            .await
        }
    }
}

async fn client(action: ClientCommand) -> anyhow::Result<()> {
    match action {
        ClientCommand::Add {
            client_id,
            name,
            redirect_uri,
            scope,
            jwks_file,
            common,
        } => {
            let s = config::load(&overrides(&common, None))?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            let new = app::NewClient {
                client_id,
                name,
                redirect_uris: redirect_uri,
                scope,
                jwks: None,
            };
            users::client_add(&vigil, new, jwks_file.as_deref()).await
        }
        ClientCommand::List { common } => {
            let s = config::load(&overrides(&common, None))?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            users::client_list(&vigil).await
        }
        ClientCommand::Revoke { client_id, common } => {
            let s = config::load(&overrides(&common, None))?;
            let (vigil, _) = serve::open_vigil(&s, false).await?;
            users::client_revoke(&vigil, &client_id).await
        }
    }
}
