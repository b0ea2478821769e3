//! Generates `crates/fhir/src/r4_schema.json` from the R4 core StructureDefinitions.
//!
//! Usage: `cargo run -p fhir --example gen_schema -- <package-dir> [out-file]`
//! where `<package-dir>` is an unpacked `hl7.fhir.r4.examples@4.0.1` npm package
//! (its `package/` folder).
//!
//! The output maps each base type name to `{"k": kind, "e": [elements]}` where kind is
//! `r` (resource), `c` (complex type) or `p` (primitive type) and each element is
//! `[path, min, max, types, targets]`:
//! - `path` is relative to the type (`name.given`, `deceased[x]`);
//! - `max` is `"*"` or a number as text;
//! - `types` is `|`-joined type codes, or `#Type.path` for a content reference;
//! - `targets` is `|`-joined Reference target type names (empty when any or none).

#![allow(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing yields Null for a missing key and never panics"
)]

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;

use serde_json::{Value, json};

const FHIR_TYPE_EXT: &str = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type";

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/tmp/fhirpkgs/package".to_owned()),
    );
    let out = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "crates/fhir/src/r4_schema.json".to_owned()),
    );

    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("StructureDefinition-") && n.ends_with(".json"))
        })
        .collect();
    files.sort();

    let mut types: BTreeMap<String, Value> = BTreeMap::new();
    for file in files {
        let sd: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        let kind = match sd["kind"].as_str() {
            Some("resource") => "r",
            Some("complex-type") => "c",
            Some("primitive-type") => "p",
            _ => continue,
        };
        if sd["derivation"].as_str() != Some("specialization") {
            continue;
        }
        let Some(name) = sd["type"].as_str() else {
            continue;
        };
        let mut elements = Vec::new();
        if kind != "p" {
            let snapshot = sd["snapshot"]["element"]
                .as_array()
                .ok_or("snapshot missing")?;
            for e in snapshot {
                let path = e["path"].as_str().ok_or("path missing")?;
                let Some(rel) = path.strip_prefix(name).and_then(|r| r.strip_prefix('.')) else {
                    continue;
                };
                let min = e["min"].as_u64().unwrap_or(0);
                let max = e["max"].as_str().unwrap_or("*");
                let mut targets = Vec::new();
                let types = if let Some(cr) = e["contentReference"].as_str() {
                    cr.to_owned()
                } else {
                    let mut codes = Vec::new();
                    for t in e["type"].as_array().into_iter().flatten() {
                        let code = t["code"].as_str().ok_or("type code missing")?;
                        let code = if code.starts_with("http://hl7.org/fhirpath/") {
                            t["extension"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .find(|x| x["url"] == FHIR_TYPE_EXT)
                                .and_then(|x| x["valueUrl"].as_str())
                                .unwrap_or("string")
                        } else {
                            code
                        };
                        // Resource.id is of type `id` (the snapshot labels it `string`).
                        let code = if kind == "r" && rel == "id" {
                            "id"
                        } else {
                            code
                        };
                        codes.push(code.to_owned());
                        if code == "Reference" {
                            for tp in t["targetProfile"].as_array().into_iter().flatten() {
                                if let Some(tn) = tp.as_str().and_then(|u| u.rsplit('/').next())
                                    && tn != "Resource"
                                    && !targets.iter().any(|x| x == tn)
                                {
                                    targets.push(tn.to_owned());
                                }
                            }
                        }
                    }
                    codes.join("|")
                };
                elements.push(json!([rel, min, max, types, targets.join("|")]));
            }
        }
        types.insert(name.to_owned(), json!({"k": kind, "e": elements}));
    }
    let mut text = String::from("{\n");
    let n = types.len();
    for (i, (name, def)) in types.into_iter().enumerate() {
        text.push_str(&format!(
            "{}:{}",
            serde_json::to_string(&name)?,
            serde_json::to_string(&def)?
        ));
        text.push_str(if i + 1 < n { ",\n" } else { "\n" });
    }
    text.push_str("}\n");
    std::fs::write(&out, text)?;
    eprintln!("wrote {} types to {}", n, out.display());
    Ok(())
}
