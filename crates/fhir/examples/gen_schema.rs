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
//! - `targets` is `|`-joined Reference target type names (empty when any or none);
//! - an optional sixth entry, present only on `code` elements with a required binding,
//!   is the index of the bound value set in the `"$vs"` table.
//!
//! The `"$vs"` table lists each required value set once as `[url, codes]`, where `codes`
//! is the sorted array of allowed codes, or `null` when the value set cannot be resolved
//! from the package alone (filters, external code systems such as `urn:ietf:bcp:13`):
//! such an element is bound but unchecked, so nothing valid is ever refused.

#![allow(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing yields Null for a missing key and never panics"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

    let mut terms = Terminology::load(&dir)?;
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
                let mut row = vec![json!(rel), json!(min), json!(max), json!(types)];
                row.push(json!(targets.join("|")));
                if types == "code"
                    && e["binding"]["strength"].as_str() == Some("required")
                    && let Some(url) = e["binding"]["valueSet"].as_str()
                {
                    row.push(json!(terms.index(url)));
                }
                elements.push(Value::Array(row));
            }
        }
        types.insert(name.to_owned(), json!({"k": kind, "e": elements}));
    }
    let mut text = String::from("{\n");
    let n = types.len();
    for (name, def) in types {
        text.push_str(&format!(
            "{}:{},\n",
            serde_json::to_string(&name)?,
            serde_json::to_string(&def)?
        ));
    }
    text.push_str("\"$vs\":[\n");
    let vs = terms.table.len();
    let mut unresolved = 0;
    for (i, (url, codes)) in terms.table.iter().enumerate() {
        let entry = match codes {
            Ok(c) => json!([url, c]),
            Err(reason) => {
                unresolved += 1;
                eprintln!("unchecked: {url}: {reason}");
                json!([url, null])
            }
        };
        text.push_str(&serde_json::to_string(&entry)?);
        text.push_str(if i + 1 < vs { ",\n" } else { "\n" });
    }
    text.push_str("]\n}\n");
    std::fs::write(&out, text)?;
    eprintln!(
        "wrote {n} types, {} bound elements and {vs} required value sets ({unresolved} unchecked) to {}",
        terms.bound,
        out.display()
    );
    Ok(())
}

/// The package's ValueSets and CodeSystems, and the table of required value sets met so far.
struct Terminology {
    value_sets: HashMap<String, Value>,
    code_systems: HashMap<String, Value>,
    /// Resolutions by canonical URL (without version), memoised.
    resolved: HashMap<String, Result<BTreeSet<String>, String>>,
    /// The `"$vs"` table, in order of first use.
    table: Vec<(String, Result<BTreeSet<String>, String>)>,
    bound: usize,
}

impl Terminology {
    fn load(dir: &std::path::Path) -> Result<Terminology, Box<dyn Error>> {
        let mut value_sets = HashMap::new();
        let mut code_systems = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".json") {
                continue;
            }
            let map = if name.starts_with("ValueSet-") {
                &mut value_sets
            } else if name.starts_with("CodeSystem-") {
                &mut code_systems
            } else {
                continue;
            };
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            if let Some(url) = v["url"].as_str() {
                map.insert(url.to_owned(), v);
            }
        }
        Ok(Terminology {
            value_sets,
            code_systems,
            resolved: HashMap::new(),
            table: Vec::new(),
            bound: 0,
        })
    }

    /// The `"$vs"` index of a required binding's value set, resolving it on first use.
    fn index(&mut self, canonical: &str) -> usize {
        self.bound += 1;
        let url = unversioned(canonical);
        if let Some(i) = self.table.iter().position(|(u, _)| u == url) {
            return i;
        }
        let codes = self.value_set(url, &mut Vec::new());
        self.table.push((url.to_owned(), codes));
        self.table.len() - 1
    }

    /// All codes of a value set; `Err` when the package alone cannot tell them all.
    fn value_set(
        &mut self,
        url: &str,
        stack: &mut Vec<String>,
    ) -> Result<BTreeSet<String>, String> {
        if let Some(r) = self.resolved.get(url) {
            return r.clone();
        }
        if stack.iter().any(|u| u == url) {
            return Err(format!("value set import cycle at {url}"));
        }
        let vs = self
            .value_sets
            .get(url)
            .cloned()
            .ok_or_else(|| format!("value set {url} not in the package"))?;
        stack.push(url.to_owned());
        let composed = self.compose(&vs["compose"], stack);
        stack.pop();
        let result = composed.or_else(|e| expansion(&vs["expansion"]).ok_or(e));
        self.resolved.insert(url.to_owned(), result.clone());
        result
    }

    fn compose(
        &mut self,
        compose: &Value,
        stack: &mut Vec<String>,
    ) -> Result<BTreeSet<String>, String> {
        let includes = compose["include"]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or("no compose.include")?;
        let mut codes = BTreeSet::new();
        for inc in includes {
            codes.extend(self.clause(inc, stack)?);
        }
        // An exclusion that cannot be resolved is left out: the set is then only too
        // large, which may let an invalid code through but never refuses a valid one.
        for exc in compose["exclude"].as_array().into_iter().flatten() {
            if let Ok(gone) = self.clause(exc, stack) {
                codes.retain(|c| !gone.contains(c));
            }
        }
        Ok(codes)
    }

    /// One include (or exclude): its system part intersected with each imported value set.
    fn clause(&mut self, inc: &Value, stack: &mut Vec<String>) -> Result<BTreeSet<String>, String> {
        if inc.get("filter").is_some() {
            return Err("compose uses a filter".to_owned());
        }
        let mut parts = Vec::new();
        if let Some(system) = inc["system"].as_str() {
            let listed: Option<BTreeSet<String>> = inc["concept"].as_array().map(|cs| {
                cs.iter()
                    .filter_map(|c| c["code"].as_str().map(str::to_owned))
                    .collect()
            });
            parts.push(match listed {
                Some(l) => l,
                None => self.code_system(system)?,
            });
        }
        for imported in inc["valueSet"].as_array().into_iter().flatten() {
            let url = imported.as_str().ok_or("valueSet import is not a string")?;
            parts.push(self.value_set(unversioned(url), stack)?);
        }
        let mut parts = parts.into_iter();
        let first = parts
            .next()
            .ok_or("include with neither system nor valueSet")?;
        Ok(parts.fold(first, |acc, p| acc.intersection(&p).cloned().collect()))
    }

    /// Every concept of a complete code system, nested hierarchies included.
    fn code_system(&self, url: &str) -> Result<BTreeSet<String>, String> {
        let cs = self
            .code_systems
            .get(url)
            .ok_or_else(|| format!("code system {url} not in the package"))?;
        if cs["content"].as_str() != Some("complete") {
            return Err(format!("code system {url} is not complete in the package"));
        }
        if cs["caseSensitive"].as_bool() == Some(false) {
            return Err(format!("code system {url} is case-insensitive"));
        }
        let mut codes = BTreeSet::new();
        collect(&cs["concept"], "concept", &mut codes);
        Ok(codes)
    }
}

/// A complete, unpaged expansion's codes, if the value set has one.
fn expansion(exp: &Value) -> Option<BTreeSet<String>> {
    if exp.get("offset").is_some_and(|o| o.as_u64() != Some(0)) {
        return None;
    }
    let mut codes = BTreeSet::new();
    collect(&exp["contains"], "contains", &mut codes);
    let complete = exp["total"]
        .as_u64()
        .is_none_or(|t| t == codes.len() as u64);
    (complete && !codes.is_empty()).then_some(codes)
}

/// The codes of a concept (or expansion) list and of its nested lists under `child`.
fn collect(list: &Value, child: &str, out: &mut BTreeSet<String>) {
    for c in list.as_array().into_iter().flatten() {
        if let Some(code) = c["code"].as_str() {
            out.insert(code.to_owned());
        }
        collect(&c[child], child, out);
    }
}

fn unversioned(canonical: &str) -> &str {
    canonical.split_once('|').map_or(canonical, |(u, _)| u)
}
