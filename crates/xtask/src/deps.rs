//! Services and tools the tests need, installed or started when missing.
//! CI runs as root on a Debian machine that reaches the Debian, npm, PyPI and crates.io
//! registries only, so everything comes from those.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// PostgreSQL accepting connections on 127.0.0.1:5432, starting the local cluster if needed.
pub fn postgres() -> Result<()> {
    if cmd::succeeds("pg_isready", &["-h", "127.0.0.1", "-p", "5432"]) {
        println!("PostgreSQL is up at 127.0.0.1:5432");
        return Ok(());
    }
    let versions: Vec<String> = fs::read_dir("/etc/postgresql")
        .context("PostgreSQL is down and /etc/postgresql is missing: install postgresql")?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    for version in &versions {
        cmd::run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            version,
            "main",
            "start",
        ]))?;
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if cmd::succeeds("pg_isready", &["-h", "127.0.0.1", "-p", "5432"]) {
            println!("PostgreSQL is up after {}", cmd::secs(start.elapsed()));
            return Ok(());
        }
        thread::sleep(Duration::from_millis(500));
    }
    bail!("PostgreSQL did not accept connections on 127.0.0.1:5432 within 60s")
}

/// The Debian packages the browser tests need, each known by a file it installs: Chromium
/// (driven by playwright-core), coturn's `turnserver` (the consultation test's TURN relay) and
/// iproute2's `ip` (the consultation test's network namespace).
const BROWSER_PACKAGES: [(&str, &str); 3] = [
    ("chromium", "/usr/bin/chromium"),
    ("coturn", "/usr/bin/turnserver"),
    ("iproute2", "/usr/sbin/ip"),
];

/// Chromium, coturn and iproute2 from Debian (see [`BROWSER_PACKAGES`]), installed with
/// apt-get when missing.
pub fn browser_packages() -> Result<()> {
    debian(&BROWSER_PACKAGES)
}

/// Installs, in one apt-get run, the packages whose file is missing; fails unless every file
/// is there afterwards.
fn debian(packages: &[(&str, &str)]) -> Result<()> {
    let mut missing = Vec::new();
    for (package, file) in packages {
        if Path::new(file).exists() {
            println!("{package} present at {file}");
        } else {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let apt = |args: &[&str]| {
        cmd::run(
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend_from_slice(&missing);
    apt(&install)?;
    for (package, file) in packages {
        if !Path::new(file).exists() {
            bail!("apt-get installed {package} but {file} is missing");
        }
    }
    Ok(())
}

/// `npm ci` in tests-external unless node_modules already matches package-lock.json.
pub fn node_modules(ext: &Path) -> Result<()> {
    let lock =
        fs::read(ext.join("package-lock.json")).context("tests-external/package-lock.json")?;
    let stamp = ext.join("node_modules").join(".xtask-package-lock.json");
    if fs::read(&stamp).is_ok_and(|s| s == lock) {
        println!("tests-external/node_modules matches package-lock.json");
        return Ok(());
    }
    cmd::run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(ext),
    )?;
    fs::write(&stamp, lock).context("writing the node_modules stamp")?;
    Ok(())
}

/// A Python venv at tests-external/.venv with the pinned requirements.
pub fn python_venv(ext: &Path) -> Result<()> {
    let reqs = fs::read(ext.join("requirements.txt")).context("tests-external/requirements.txt")?;
    let venv = ext.join(".venv");
    let stamp = venv.join(".xtask-requirements.txt");
    if venv.join("bin/python").exists() && fs::read(&stamp).is_ok_and(|s| s == reqs) {
        println!("tests-external/.venv matches requirements.txt");
        return Ok(());
    }
    if !venv.join("bin/python").exists() {
        cmd::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    cmd::run(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                "requirements.txt",
            ])
            .current_dir(ext),
    )?;
    fs::write(&stamp, reqs).context("writing the venv stamp")?;
    Ok(())
}
