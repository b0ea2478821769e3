//! The external tests (tests-external/): third-party FHIR clients and the official R4
//! examples against a real `vigil` server that this module starts and stops.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::server::{Options, Server};
use crate::{cmd, deps};

/// The longest one external script may run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(15 * 60);

/// `cargo xtask ext`: dependencies, the server binary, then the tests.
pub fn run(root: &Path) -> Result<()> {
    let ext = root.join("tests-external");
    deps::node_modules(&ext)?;
    deps::python_venv(&ext)?;
    deps::chromium()?;
    let bin = server_binary(root)?;
    tests(&ext, &bin)
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

/// Runs every external script against the server it needs; fails when any failed.
pub fn tests(ext: &Path, bin: &Path) -> Result<()> {
    let mut outcomes: Vec<(String, Option<String>)> = Vec::new();
    let rounds: [(&str, Options, Vec<Script>); 3] = [
        (
            "examples-server",
            Options {
                referential_integrity: false,
                demo: false,
            },
            vec![
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
        ),
        (
            "clients-server",
            Options {
                referential_integrity: true,
                demo: false,
            },
            vec![
                Script {
                    name: "fhir-kit-client (Node)",
                    program: Program::Node,
                    file: "client-fhirkit.js",
                },
                Script {
                    name: "fhirclient (Python, SMART)",
                    program: Program::Python,
                    file: "client_fhirclient.py",
                },
            ],
        ),
        (
            "browser-server",
            Options {
                referential_integrity: true,
                demo: true,
            },
            vec![Script {
                name: "record browser page (Chromium, playwright-core)",
                program: Program::Node,
                file: "browser.js",
            }],
        ),
    ];
    for (server_name, opts, scripts) in rounds {
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
                continue;
            }
        };
        outcomes.push((format!("{server_name} starts"), None));
        let mut round_failed = false;
        for script in &scripts {
            println!(
                "\n--- {} ({}) against {}",
                script.name, script.file, server.url
            );
            let started = std::time::Instant::now();
            let outcome = run_script(ext, script, &server);
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

fn run_script(ext: &Path, script: &Script, server: &Server) -> Result<()> {
    let mut command = match script.program {
        Program::Node => Command::new("node"),
        Program::Python => {
            let mut c = Command::new(ext.join(".venv/bin/python"));
            c.arg("-u");
            c
        }
    };
    command
        .arg(script.file)
        .current_dir(ext)
        .env("VIGIL_URL", &server.url)
        .env("VIGIL_TOKEN", &server.token);
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
