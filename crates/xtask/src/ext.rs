//! The external tests (tests-external/): third-party FHIR clients and the official R4
//! examples against a real `vigil` server that this module starts and stops.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::server::{ADMIN_USER, Options, Server, passphrase};
use crate::{cmd, consult, deps};

/// The longest one external script may run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(15 * 60);

/// `cargo xtask ext [SCRIPT...]`: dependencies, the server binary, then the tests (only the
/// rounds and scripts named, when some are).
pub fn run(root: &Path, only: &[String]) -> Result<()> {
    let ext = root.join("tests-external");
    deps::node_modules(&ext)?;
    deps::python_venv(&ext)?;
    deps::browser_packages()?;
    let bin = server_binary(root)?;
    tests(&ext, &bin, only)
}

/// The server binary: `VIGIL_BIN` when set, else a fresh `cargo build -p vigil`.
pub fn server_binary(root: &Path) -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("VIGIL_BIN") {
        println!("using VIGIL_BIN={}", PathBuf::from(&bin).display());
        return Ok(PathBuf::from(bin));
    }
    cmd::run(
        Command::new(cargo())
            .args(["build", "--package", "vigil", "--bin", "vigil", "--locked"])
            .current_dir(root),
    )?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("debug").join("vigil");
    if !bin.exists() {
        bail!("built vigil but {} is missing", bin.display());
    }
    Ok(bin)
}

struct Script {
    name: &'static str,
    program: Program,
    file: &'static str,
}

enum Program {
    Node,
    Python,
}

/// What a round's server needs beyond `ext-admin` before its scripts run.
#[derive(Clone, Copy)]
enum Setup {
    Nothing,
    /// A patient account on a Patient, and the SMART app `ext-smart` (fhirclient's launch).
    Clients,
    /// The physician `dr.ada` (the identity pages' browser tests).
    Identity,
    /// The physician `rec.viewer`, who signs in to the record browser (`browser.js`).
    RecordBrowser,
    /// Two Patients, a patient account on one, the physician `dr.audit` (on that patient's
    /// care team) with an operator token, and the privacy officer `po.audit` (the access log
    /// pages, `audit-browser.js`).
    Audit,
    /// Two Patients with clinical data, a physician on the care team of one only, the
    /// privacy officer and the other patient's account (charts, denials, break-the-glass,
    /// reviews and the policy pages, `policy-browser.js`).
    Policy,
    /// The demo clinic's password (printed once by `serve --demo`, read from the server's
    /// log) for the demo privacy officer `privacy` and patient `patient` (privacy monitoring's
    /// pages, `monitor-browser.js`).
    Monitor,
    /// A physician on a Practitioner, two Patients and two Appointments of one of them with
    /// that Practitioner starting now (telehealth consultations, `consult-browser.js`; see
    /// `consult::set_up`).
    Consult,
}

/// The `[identity]` settings of the identity round: a short idle timeout to test.
const IDENTITY_CONFIG: &str = "\
[identity]
session_idle_seconds = 8
organisation = \"Riverside Community Clinic\"
";

pub struct Round {
    server: &'static str,
    pub opts: Options,
    setup: Setup,
    /// Runs in a network namespace of its own, with a TURN relay (see `consult.rs`).
    netns: bool,
    scripts: Vec<Script>,
}

fn rounds() -> Vec<Round> {
    vec![
        Round {
            server: "examples-server",
            opts: Options {
                referential_integrity: false,
                demo: false,
                config: None,
            },
            setup: Setup::Nothing,
            netns: false,
            scripts: vec![
                Script {
                    name: "official R4 examples round trip",
                    program: Program::Node,
                    file: "examples.js",
                },
                Script {
                    name: "independent validation (fhir.resources)",
                    program: Program::Python,
                    file: "validate_resources.py",
                },
            ],
        },
        Round {
            server: "clients-server",
            opts: Options {
                referential_integrity: true,
                demo: false,
                config: None,
            },
            setup: Setup::Clients,
            netns: false,
            scripts: vec![
                Script {
                    name: "fhir-kit-client (Node)",
                    program: Program::Node,
                    file: "client-fhirkit.js",
                },
                Script {
                    name: "fhirclient (Python, SMART launch with PKCE)",
                    program: Program::Python,
                    file: "client_fhirclient.py",
                },
                Script {
                    name: "backend service (client credentials, ES384 assertion)",
                    program: Program::Python,
                    file: "backend_service.py",
                },
            ],
        },
        Round {
            server: "browser-server",
            opts: Options {
                referential_integrity: true,
                demo: true,
                config: None,
            },
            setup: Setup::RecordBrowser,
            netns: false,
            scripts: vec![Script {
                name: "record browser page (Chromium, playwright-core)",
                program: Program::Node,
                file: "browser.js",
            }],
        },
        Round {
            server: "identity-server",
            opts: Options {
                referential_integrity: true,
                demo: false,
                config: Some(IDENTITY_CONFIG.to_owned()),
            },
            setup: Setup::Identity,
            netns: false,
            scripts: vec![Script {
                name: "identity pages (Chromium: TOTP, passkey, idle timeout, CSRF, reset)",
                program: Program::Node,
                file: "identity-browser.js",
            }],
        },
        Round {
            server: "audit-server",
            opts: Options {
                referential_integrity: true,
                demo: false,
                config: None,
            },
            setup: Setup::Audit,
            netns: false,
            scripts: vec![Script {
                name: "access log pages (Chromium: patient's access log, privacy officer's audit trail)",
                program: Program::Node,
                file: "audit-browser.js",
            }],
        },
        Round {
            server: "policy-server",
            opts: Options {
                referential_integrity: true,
                demo: false,
                config: None,
            },
            setup: Setup::Policy,
            netns: false,
            scripts: vec![Script {
                name: "access policy pages (Chromium: chart, export, denial, break-the-glass, review, what-if, access log and download)",
                program: Program::Node,
                file: "policy-browser.js",
            }],
        },
        Round {
            server: "monitor-server",
            opts: Options {
                referential_integrity: true,
                demo: true,
                config: None,
            },
            setup: Setup::Monitor,
            netns: false,
            scripts: vec![Script {
                name: "privacy monitoring pages (Chromium: a snooping access becomes a case, the officer reads the explanations and decides; the patient's access log explains)",
                program: Program::Node,
                file: "monitor-browser.js",
            }],
        },
        Round {
            server: "consult-server",
            opts: Options {
                referential_integrity: true,
                demo: false,
                // The `[consult]` section, with the relay's secret, is added in the namespace.
                config: None,
            },
            setup: Setup::Consult,
            netns: true,
            scripts: vec![Script {
                name: "telehealth consultations (Chromium and coturn in a network namespace: check-in, admission, video and audio, chat and DLP, a relayed call, TURN credentials, refusals)",
                program: Program::Node,
                file: "consult-browser.js",
            }],
        },
    ]
}

/// The Patients of the audit round: the one with an account, and another whose accesses
/// must stay off that account's access log.
/// The record browser's physician, and how many patients `serve --demo` seeds.
const REC_PRACTITIONER: &str = "ext-rec-viewer";
const DEMO_PATIENTS: usize = 300;

const AUDIT_PATIENT: &str = "ext-audit-pat";
const AUDIT_OTHER: &str = "ext-audit-other";
const AUDIT_OBSERVATIONS: [&str; 2] = ["ext-audit-obs-1", "ext-audit-obs-2"];
/// The audit round's physician is this Practitioner, on the care team of `AUDIT_PATIENT` only.
const AUDIT_PRACTITIONER: &str = "ext-audit-dr";

/// `vigil user add` of an account with a fresh passphrase (read from standard input);
/// returns the passphrase.
pub fn add_user(server: &Server, username: &str, role: &str, extra: &[&str]) -> Result<String> {
    let password = passphrase()?;
    let mut args = vec![
        "user",
        "add",
        "--username",
        username,
        "--role",
        role,
        "--password-stdin",
    ];
    args.extend_from_slice(extra);
    server.cli(&args, Some(&password))?;
    Ok(password)
}

/// `Practitioner/{id}`.
pub fn practitioner(server: &Server, id: &str, family: &str) -> Result<()> {
    server.put(
        &format!("Practitioner/{id}"),
        &format!(
            r#"{{"resourceType":"Practitioner","id":"{id}","name":[{{"family":"{family}","prefix":["Dr"]}}]}}"#
        ),
    )?;
    Ok(())
}

/// An active `CareTeam/{id}` of `patient` with `practitioner` as its member (the
/// relationship the access policy's care rule needs).
fn care_team(server: &Server, id: &str, patient: &str, practitioner: &str) -> Result<()> {
    server.put(
        &format!("CareTeam/{id}"),
        &format!(
            r#"{{"resourceType":"CareTeam","id":"{id}","status":"active","subject":{{"reference":"Patient/{patient}"}},"participant":[{{"member":{{"reference":"Practitioner/{practitioner}"}}}}]}}"#
        ),
    )?;
    Ok(())
}

fn set_up_audit(server: &Server, env: &mut Vec<(String, String)>) -> Result<()> {
    for (id, family, given, born) in [
        (AUDIT_PATIENT, "Audit", "Pat", "1979-03-14"),
        (AUDIT_OTHER, "Otherton", "Olive", "1990-11-02"),
    ] {
        server.put(
            &format!("Patient/{id}"),
            &format!(
                r#"{{"resourceType":"Patient","id":"{id}","name":[{{"family":"{family}","given":["{given}"]}}],"gender":"female","birthDate":"{born}"}}"#
            ),
        )?;
    }
    for (id, value) in AUDIT_OBSERVATIONS.iter().zip([72, 75]) {
        server.put(
            &format!("Observation/{id}"),
            &format!(
                r#"{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}}]}},"subject":{{"reference":"Patient/{AUDIT_PATIENT}"}},"effectiveDateTime":"2025-01-0{n}T09:00:00Z","valueQuantity":{{"value":{value},"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"}}}}"#,
                n = value - 70,
            ),
        )?;
    }
    let pat = add_user(
        server,
        "pat.audit",
        "patient",
        &["--patient", AUDIT_PATIENT, "--name", "Pat Audit"],
    )?;
    practitioner(server, AUDIT_PRACTITIONER, "Audit")?;
    care_team(server, "ext-audit-team", AUDIT_PATIENT, AUDIT_PRACTITIONER)?;
    let dr = add_user(
        server,
        "dr.audit",
        "physician",
        &["--practitioner", AUDIT_PRACTITIONER, "--name", "Dr Audit"],
    )?;
    let po = add_user(
        server,
        "po.audit",
        "privacy-officer",
        &["--name", "Priya Officer"],
    )?;
    let dr_token = server.issue_token("dr.audit", "user/*.rs")?;
    env.extend([
        (
            "VIGIL_AUDIT_PATIENT_ID".to_owned(),
            AUDIT_PATIENT.to_owned(),
        ),
        ("VIGIL_AUDIT_OTHER_ID".to_owned(), AUDIT_OTHER.to_owned()),
        (
            "VIGIL_AUDIT_OBSERVATIONS".to_owned(),
            AUDIT_OBSERVATIONS.join(","),
        ),
        ("VIGIL_PAT_USER".to_owned(), "pat.audit".to_owned()),
        ("VIGIL_PAT_PASSWORD".to_owned(), pat),
        ("VIGIL_DR_USER".to_owned(), "dr.audit".to_owned()),
        ("VIGIL_DR_PASSWORD".to_owned(), dr),
        ("VIGIL_DR_TOKEN".to_owned(), dr_token),
        ("VIGIL_PO_USER".to_owned(), "po.audit".to_owned()),
        ("VIGIL_PO_PASSWORD".to_owned(), po),
    ]);
    Ok(())
}

/// The policy round: patient A (on the physician's care team), patient B (not, with an
/// account), their records, and the physician's Practitioner.
const POLICY_A: &str = "ext-pol-a";
const POLICY_B: &str = "ext-pol-b";
const POLICY_PRACTITIONER: &str = "ext-pol-dr";

fn set_up_policy(server: &Server, env: &mut Vec<(String, String)>) -> Result<()> {
    for (id, family, given, born) in [
        (POLICY_A, "Careford", "Ann", "1975-06-01"),
        (POLICY_B, "Glassby", "Ben", "1988-09-23"),
    ] {
        server.put(
            &format!("Patient/{id}"),
            &format!(
                r#"{{"resourceType":"Patient","id":"{id}","identifier":[{{"system":"urn:mrn","value":"MRN-{id}"}}],"name":[{{"family":"{family}","given":["{given}"]}}],"gender":"male","birthDate":"{born}"}}"#
            ),
        )?;
        server.put(
            &format!("Observation/{id}-hr"),
            &format!(
                r#"{{"resourceType":"Observation","id":"{id}-hr","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}}]}},"subject":{{"reference":"Patient/{id}"}},"effectiveDateTime":"2025-02-03T10:00:00Z","valueQuantity":{{"value":88,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"}}}}"#
            ),
        )?;
        server.put(
            &format!("Condition/{id}-asthma"),
            &format!(
                r#"{{"resourceType":"Condition","id":"{id}-asthma","clinicalStatus":{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}}]}},"code":{{"text":"Asthma"}},"subject":{{"reference":"Patient/{id}"}},"onsetDateTime":"2019-04-01"}}"#
            ),
        )?;
    }
    practitioner(server, POLICY_PRACTITIONER, "Policy")?;
    care_team(server, "ext-pol-team", POLICY_A, POLICY_PRACTITIONER)?;
    let dr = add_user(
        server,
        "dr.policy",
        "physician",
        &["--practitioner", POLICY_PRACTITIONER, "--name", "Dr Policy"],
    )?;
    let po = add_user(
        server,
        "po.policy",
        "privacy-officer",
        &["--name", "Priya Policy"],
    )?;
    let pat = add_user(
        server,
        "pat.policy",
        "patient",
        &["--patient", POLICY_B, "--name", "Ben Glassby"],
    )?;
    env.extend([
        ("VIGIL_POLICY_A".to_owned(), POLICY_A.to_owned()),
        ("VIGIL_POLICY_B".to_owned(), POLICY_B.to_owned()),
        ("VIGIL_DR_USER".to_owned(), "dr.policy".to_owned()),
        ("VIGIL_DR_PASSWORD".to_owned(), dr),
        ("VIGIL_PO_USER".to_owned(), "po.policy".to_owned()),
        ("VIGIL_PO_PASSWORD".to_owned(), po),
        ("VIGIL_PAT_USER".to_owned(), "pat.policy".to_owned()),
        ("VIGIL_PAT_PASSWORD".to_owned(), pat),
    ]);
    Ok(())
}

/// Creates what the round's scripts expect; returns the environment that tells them.
fn set_up(server: &Server, setup: Setup) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    match setup {
        Setup::Nothing => {}
        Setup::Clients => {
            let patient = "ext-pat-jones";
            server.put(
                &format!("Patient/{patient}"),
                &format!(
                    r#"{{"resourceType":"Patient","id":"{patient}","name":[{{"family":"Jones","given":["Pat"]}}],"gender":"female","birthDate":"1984-05-06"}}"#
                ),
            )?;
            let password = passphrase()?;
            server.cli(
                &[
                    "user",
                    "add",
                    "--username",
                    "pat.jones",
                    "--role",
                    "patient",
                    "--patient",
                    patient,
                    "--password-stdin",
                ],
                Some(&password),
            )?;
            env.extend([
                ("VIGIL_PATIENT_USER".to_owned(), "pat.jones".to_owned()),
                ("VIGIL_PATIENT_PASSWORD".to_owned(), password),
                ("VIGIL_PATIENT_ID".to_owned(), patient.to_owned()),
            ]);
            let redirect = format!("{}/ext-callback", server.url);
            server.cli(
                &[
                    "client",
                    "add",
                    "--client-id",
                    "ext-smart",
                    "--name",
                    "External SMART app",
                    "--redirect-uri",
                    &redirect,
                    "--scope",
                    "launch/patient openid fhirUser offline_access patient/*.rs",
                ],
                None,
            )?;
            env.extend([
                ("VIGIL_SMART_CLIENT".to_owned(), "ext-smart".to_owned()),
                ("VIGIL_SMART_REDIRECT".to_owned(), redirect),
            ]);
        }
        Setup::Identity => {
            let password = passphrase()?;
            server.cli(
                &[
                    "user",
                    "add",
                    "--username",
                    "dr.ada",
                    "--role",
                    "physician",
                    "--password-stdin",
                    "--email",
                    "ada@clinic.example",
                    "--name",
                    "Ada Lovelace",
                ],
                Some(&password),
            )?;
            env.extend([
                ("VIGIL_ADA_USER".to_owned(), "dr.ada".to_owned()),
                ("VIGIL_ADA_PASSWORD".to_owned(), password),
            ]);
        }
        Setup::RecordBrowser => {
            // The viewer browses the whole demo clinic, so under the access
            // policy it is a physician on every demo patient's care team.
            server.put(
                &format!("Practitioner/{REC_PRACTITIONER}"),
                &format!(
                    r#"{{"resourceType":"Practitioner","id":"{REC_PRACTITIONER}","name":[{{"family":"Viewer","given":["Rec"]}}]}}"#
                ),
            )?;
            for n in 0..DEMO_PATIENTS {
                let pid = format!("pat-{n:05}");
                server.put(
                    &format!("CareTeam/ext-rec-ct-{n}"),
                    &format!(
                        r#"{{"resourceType":"CareTeam","id":"ext-rec-ct-{n}","status":"active","subject":{{"reference":"Patient/{pid}"}},"participant":[{{"member":{{"reference":"Practitioner/{REC_PRACTITIONER}"}}}}]}}"#
                    ),
                )?;
            }
            let password = passphrase()?;
            server.cli(
                &[
                    "user",
                    "add",
                    "--username",
                    "rec.viewer",
                    "--role",
                    "physician",
                    "--practitioner",
                    REC_PRACTITIONER,
                    "--password-stdin",
                ],
                Some(&password),
            )?;
            env.extend([
                ("VIGIL_REC_USER".to_owned(), "rec.viewer".to_owned()),
                ("VIGIL_REC_PASSWORD".to_owned(), password),
                (
                    "VIGIL_REC_PRACTITIONER".to_owned(),
                    REC_PRACTITIONER.to_owned(),
                ),
            ]);
        }
        Setup::Audit => set_up_audit(server, &mut env)?,
        Setup::Policy => set_up_policy(server, &mut env)?,
        Setup::Consult => consult::set_up(server, &mut env)?,
        Setup::Monitor => {
            let log = std::fs::read_to_string(&server.log)
                .with_context(|| format!("reading {}", server.log.display()))?;
            let password = demo_password(&log)
                .context("the demo server's log has no line with the demo accounts' password")?;
            env.extend([
                ("VIGIL_DEMO_PASSWORD".to_owned(), password),
                ("VIGIL_PO_USER".to_owned(), "privacy".to_owned()),
                ("VIGIL_PAT_USER".to_owned(), "patient".to_owned()),
                ("VIGIL_PAT_PATIENT".to_owned(), "pat-00000".to_owned()),
            ]);
        }
    }
    Ok(env)
}

/// The demo accounts' password from `serve --demo`'s output ("… all with the password PW:").
fn demo_password(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.split_once("all with the password ").map(|(_, pw)| pw))
        .map(|pw| pw.trim().trim_end_matches(':').to_owned())
        .filter(|pw| !pw.is_empty())
}

/// What one check of a round came to: its name, and the error when it failed.
pub type Outcome = (String, Option<String>);

/// Runs every external script (or those whose file is in `only`, when it is not empty)
/// against the server it needs; fails when any failed.
pub fn tests(ext: &Path, bin: &Path, only: &[String]) -> Result<()> {
    let known: Vec<&str> = rounds()
        .iter()
        .flat_map(|r| r.scripts.iter().map(|s| s.file))
        .collect();
    if let Some(unknown) = only.iter().find(|f| !known.contains(&f.as_str())) {
        bail!(
            "no external script {unknown} (there are {})",
            known.join(", ")
        );
    }
    let mut outcomes: Vec<Outcome> = Vec::new();
    for mut round in rounds() {
        if !only.is_empty() {
            round.scripts.retain(|s| only.iter().any(|f| f == s.file));
            if round.scripts.is_empty() {
                continue;
            }
        }
        if round.netns {
            let files: Vec<&str> = round.scripts.iter().map(|s| s.file).collect();
            outcomes.extend(consult::in_namespace(ext, bin, round.server, &files));
        } else {
            outcomes.extend(run_round(ext, bin, round, &[]));
        }
    }

    println!("\n--- external tests");
    let mut failed = 0;
    for (name, error) in &outcomes {
        match error {
            None => println!("PASS {name}"),
            Some(e) => {
                failed += 1;
                println!("FAIL {name}: {}", e.lines().next().unwrap_or_default());
            }
        }
    }
    println!(
        "external: {} passed, {failed} failed",
        outcomes.len() - failed
    );
    if failed > 0 {
        bail!("{failed} external test(s) failed");
    }
    Ok(())
}

/// The round of `server` with only the scripts `files` (for a round run elsewhere: see
/// `consult::in_namespace`).
pub fn round_named(server: &str, files: &[String]) -> Option<Round> {
    let mut round = rounds().into_iter().find(|r| r.server == server)?;
    round.scripts.retain(|s| files.iter().any(|f| f == s.file));
    Some(round)
}

/// Starts the round's server, sets it up, runs its scripts (with `env` besides what the
/// setup creates) and stops it; returns what passed and failed.
pub fn run_round(ext: &Path, bin: &Path, round: Round, env: &[(String, String)]) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = Vec::new();
    let Round {
        server: server_name,
        opts,
        setup,
        scripts,
        netns: _,
    } = round;
    let mut server = match Server::start(bin, server_name, &opts) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("{e:#}");
            println!("FAIL {server_name}: {msg}");
            for s in &scripts {
                outcomes.push((
                    s.name.to_owned(),
                    Some(format!("not run: {server_name} did not start")),
                ));
            }
            outcomes.push((format!("{server_name} starts"), Some(msg)));
            return outcomes;
        }
    };
    outcomes.push((format!("{server_name} starts"), None));
    let mut round_failed = false;
    // A failed setup is reported, and the scripts still run: each reports what it misses.
    let mut extra = match set_up(&server, setup) {
        Ok(env) => {
            if !matches!(setup, Setup::Nothing) {
                outcomes.push((format!("{server_name} setup (CLI)"), None));
            }
            env
        }
        Err(e) => {
            let msg = format!("{e:#}");
            println!("FAIL {server_name} setup: {msg}");
            outcomes.push((format!("{server_name} setup (CLI)"), Some(msg)));
            round_failed = true;
            Vec::new()
        }
    };
    extra.extend_from_slice(env);
    for script in &scripts {
        println!(
            "\n--- {} ({}) against {}",
            script.name, script.file, server.url
        );
        let started = std::time::Instant::now();
        let outcome = run_script(ext, bin, script, &server, &extra);
        let took = cmd::secs(started.elapsed());
        if let Err(e) = &outcome {
            println!("FAIL {}: {e:#}", script.name);
            round_failed = true;
        }
        if !server.alive() {
            println!("FAIL {server_name} died during {}", script.file);
            round_failed = true;
        }
        outcomes.push((
            format!("{} ({took})", script.name),
            outcome.err().map(|e| format!("{e:#}")),
        ));
    }
    let panics = server.panics();
    if !panics.is_empty() {
        round_failed = true;
        outcomes.push((
            format!("{server_name} does not panic"),
            Some(panics.join("\n")),
        ));
    }
    if round_failed {
        println!("{}", server.log_tail(30));
        server.stop();
        println!(
            "kept the server directory for inspection: {}",
            server.dir.display()
        );
    } else {
        server.discard();
    }
    outcomes
}

/// Runs one script with the server's address, the administrator's token and password, the
/// round's extra settings, and (for scripts that use the CLI) `VIGIL_BIN` with the server's
/// own `VIGIL_*` settings.
fn run_script(
    ext: &Path,
    bin: &Path,
    script: &Script,
    server: &Server,
    extra: &[(String, String)],
) -> Result<()> {
    let mut command = match script.program {
        Program::Node => Command::new("node"),
        Program::Python => {
            let mut c = Command::new(ext.join(".venv/bin/python"));
            c.arg("-u");
            c
        }
    };
    command.arg(script.file).current_dir(ext);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VIGIL_") {
            command.env_remove(&key);
        }
    }
    for (key, value) in &server.env {
        command.env(key, value);
    }
    // Scripts run in tests-external: a relative VIGIL_BIN would not resolve there.
    let bin = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
    command
        .env("VIGIL_BIN", &bin)
        .env("VIGIL_URL", &server.url)
        .env("VIGIL_TOKEN", &server.token)
        .env("VIGIL_ADMIN_USER", ADMIN_USER)
        .env("VIGIL_ADMIN_PASSWORD", &server.admin_password);
    for (key, value) in extra {
        command.env(key, value);
    }
    let status = cmd::status_within(&mut command, SCRIPT_LIMIT)
        .with_context(|| format!("running {}", script.file))?;
    if !status.success() {
        bail!("{} exited with {status}", script.file);
    }
    Ok(())
}

pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}
