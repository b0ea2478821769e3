//! Project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! `ci` is the one command that runs the whole test suite, the same locally and in CI:
//! services, tools, formatting, lints, unit and integration tests, then the external
//! clients and the official FHIR examples against a real `vigil` server.

mod ci;
mod cmd;
mod consult;
mod deps;
mod ext;
mod server;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci     run the whole test suite (what .ci/run runs)
  ext [SCRIPT...]
         run only the external tests against fresh servers (tests-external/);
         with script files (e.g. browser.js), only those and their servers
  help   show this text

environment:
  VIGIL_BIN              use this server binary instead of building `vigil` (ext)
  VIGIL_WRITE_REFUSALS=1 rewrite tests-external/expected-refusals.json from the run (ext)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(&root()),
        Some("ext") => ext::run(&root(), args.get(1..).unwrap_or_default()),
        Some(consult::NAMESPACE_COMMAND) => {
            consult::namespace_round(args.get(1..).unwrap_or_default())
        }
        Some("help" | "-h" | "--help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: this crate lives in `<root>/crates/xtask`.
fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}
