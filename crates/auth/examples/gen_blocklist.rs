//! Writes `crates/auth/data/blocklist.bin` from zxcvbn's list of common passwords.
//!
//! The source is the `passwords` list in `lib/frequency_lists.js` of the npm package
//! `zxcvbn` 4.4.2 (MIT licence, Dan Wheeler and Dropbox): the 30,000 most frequent
//! passwords of a corpus of breached passwords. Regenerate with:
//!
//! ```text
//! cd "$(mktemp -d)" && npm pack zxcvbn@4.4.2 && tar xzf zxcvbn-4.4.2.tgz
//! cargo run -p auth --example gen_blocklist -- "$PWD/package/lib/frequency_lists.js" \
//!     /path/to/vigil/crates/auth/data/blocklist.bin
//! ```
//!
//! The output is the sorted, deduplicated big-endian `u64` prefixes of SHA-256 over each
//! password after `auth::password::blocklist_key` (NFKC, then lower case).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: gen_blocklist <frequency_lists.js> <blocklist.bin>");
        return ExitCode::FAILURE;
    };
    let source = match std::fs::read_to_string(input) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("gen_blocklist: cannot read {input}: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The file is generated CoffeeScript: `passwords: "a,b,c",` on one line.
    let Some(list) = source
        .split_once("passwords: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(list, _)| list)
    else {
        eprintln!("gen_blocklist: no `passwords` list in {input}");
        return ExitCode::FAILURE;
    };
    let mut keys: Vec<u64> = list
        .split(',')
        .filter(|p| !p.is_empty())
        .map(auth::password::blocklist_key)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let bytes: Vec<u8> = keys.iter().flat_map(|k| k.to_be_bytes()).collect();
    if let Err(err) = std::fs::write(output, &bytes) {
        eprintln!("gen_blocklist: cannot write {output}: {err}");
        return ExitCode::FAILURE;
    }
    println!("{} passwords, {} bytes", keys.len(), bytes.len());
    ExitCode::SUCCESS
}
