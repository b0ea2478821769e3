//! `cargo xtask ci`: the whole test suite, step by step, each timed.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::cmd::{self, Steps};
use crate::deps;
use crate::ext::{self, cargo};

pub fn run(root: &Path) -> Result<()> {
    let start = Instant::now();
    let ext_dir = root.join("tests-external");
    let cargo_cmd = |args: &[&str]| {
        let mut c = Command::new(cargo());
        c.args(args).current_dir(root);
        if std::env::var_os("CARGO_INCREMENTAL").is_none() {
            c.env("CARGO_INCREMENTAL", "0");
        }
        c
    };
    let nextest = cmd::succeeds(&cargo(), &["nextest", "--version"]);
    let mut steps = Steps::default();

    steps.step("PostgreSQL at 127.0.0.1:5432", deps::postgres);
    steps.step(
        "chromium, coturn, iproute2 (Debian)",
        deps::browser_packages,
    );
    steps.step("npm ci (tests-external)", || deps::node_modules(&ext_dir));
    steps.step("Python venv (tests-external/.venv)", || {
        deps::python_venv(&ext_dir)
    });
    steps.step("cargo fmt --check", || {
        cmd::run(&mut cargo_cmd(&["fmt", "--all", "--check"]))
    });
    steps.step("cargo clippy", || {
        cmd::run(&mut cargo_cmd(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--keep-going",
            "--",
            "-D",
            "warnings",
        ]))
    });
    // `--no-fail-fast` only applies to running; nextest refuses it with `--no-run`.
    let (build_args, run_args): (&[&str], &[&str]) = if nextest {
        (
            &["nextest", "run", "--workspace", "--locked", "--no-run"],
            &[
                "nextest",
                "run",
                "--workspace",
                "--locked",
                "--no-fail-fast",
            ],
        )
    } else {
        println!("cargo-nextest is not installed: using cargo test");
        (
            &["test", "--workspace", "--locked", "--no-run"],
            &["test", "--workspace", "--locked", "--no-fail-fast"],
        )
    };
    let built = steps.step("build tests", || cmd::run(&mut cargo_cmd(build_args)));
    steps.step("run tests", || {
        if !built {
            bail!("skipped: the tests did not build");
        }
        cmd::run(&mut cargo_cmd(run_args))
    });
    steps.step("doc tests", || {
        cmd::run(&mut cargo_cmd(&[
            "test",
            "--doc",
            "--workspace",
            "--locked",
        ]))
    });
    let mut bin = None;
    steps.step("build vigil", || {
        bin = Some(ext::server_binary(root)?);
        Ok(())
    });
    steps.step("external tests (tests-external)", || match &bin {
        Some(bin) => ext::tests(&ext_dir, bin, &[]),
        None => bail!("skipped: no vigil binary"),
    });
    steps.finish(start.elapsed())
}
