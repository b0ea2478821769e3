//! Running commands and timing steps, with output a person can follow in a CI log.

use std::ffi::OsStr;
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Runs `cmd` with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed: {status}", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` with inherited stdio and returns its exit status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    println!("$ {}", display(cmd));
    cmd.status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))
}

/// Runs `cmd` like [`status`], killing it when it outlives `limit`.
pub fn status_within(cmd: &mut Command, limit: Duration) -> Result<ExitStatus> {
    println!("$ {}", display(cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            bail!(
                "`{}` ran over {}s and was killed",
                display(cmd),
                limit.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// True when `program args` starts and exits 0 (output hidden).
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The command line, for logs.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if s.is_empty() || s.contains([' ', '"', '\'']) {
        format!("'{}'", s.replace('\'', "'\\''"))
    } else {
        s.into_owned()
    }
}

/// The outcome of one named step, for the closing summary.
pub struct StepResult {
    pub name: String,
    pub elapsed: Duration,
    pub error: Option<String>,
}

/// Runs and times the steps in order, printing a header before each and a summary after all.
/// Every step runs even when an earlier one failed (a step may skip itself); the run fails
/// when any step failed.
#[derive(Default)]
pub struct Steps {
    results: Vec<StepResult>,
}

impl Steps {
    pub fn step(&mut self, name: &str, body: impl FnOnce() -> Result<()>) -> bool {
        let index = self.results.len() + 1;
        println!("\n==> [{index}] {name}");
        let start = Instant::now();
        let outcome = body();
        let elapsed = start.elapsed();
        let error = outcome.err().map(|e| format!("{e:#}"));
        match &error {
            None => println!("<== [{index}] {name}: ok in {}", secs(elapsed)),
            Some(e) => println!("<== [{index}] {name}: FAILED in {}: {e}", secs(elapsed)),
        }
        let ok = error.is_none();
        self.results.push(StepResult {
            name: name.to_owned(),
            elapsed,
            error,
        });
        ok
    }

    /// Prints the timing table and fails when any step failed.
    pub fn finish(self, total: Duration) -> Result<()> {
        println!("\n==> summary");
        for r in &self.results {
            let verdict = if r.error.is_some() { "FAILED" } else { "ok" };
            println!("  {:>8}  {verdict:<6}  {}", secs(r.elapsed), r.name);
        }
        println!("  {:>8}  total", secs(total));
        let failed: Vec<&StepResult> = self.results.iter().filter(|r| r.error.is_some()).collect();
        for r in &failed {
            println!(
                "FAIL {}: {}",
                r.name,
                r.error.as_deref().unwrap_or_default()
            );
        }
        let passed = self.results.len() - failed.len();
        println!("steps: {passed} passed, {} failed", failed.len());
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("{} of {} steps failed", failed.len(), self.results.len())
        }
    }
}

pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
