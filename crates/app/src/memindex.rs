//! The in-memory index for prefix search on names.
//!
//! FHIR's default string match is a prefix match, which a keyed blind index
//! cannot answer. These terms come from decrypted data, are built at start and
//! kept current on every write, and are never written to disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use model::{ResourceId, ResourceType};

#[derive(Default)]
struct Inner {
    /// (type, param) → term → ids.
    terms: HashMap<(ResourceType, &'static str), BTreeMap<String, BTreeSet<ResourceId>>>,
    /// (type, id) → its terms, to remove them on update or delete.
    by_resource: HashMap<(ResourceType, ResourceId), Vec<(&'static str, String)>>,
}

#[derive(Default)]
pub struct MemIndex {
    inner: RwLock<Inner>,
}

impl MemIndex {
    /// Replaces the terms of one resource (empty `terms` removes it).
    pub fn set(&self, rtype: ResourceType, id: &ResourceId, terms: Vec<(&'static str, String)>) {
        let Ok(mut g) = self.inner.write() else {
            return;
        };
        let inner = &mut *g;
        if let Some(old) = inner.by_resource.remove(&(rtype, id.clone())) {
            for (param, term) in old {
                let Some(map) = inner.terms.get_mut(&(rtype, param)) else {
                    continue;
                };
                if let Some(set) = map.get_mut(&term) {
                    set.remove(id);
                    if set.is_empty() {
                        map.remove(&term);
                    }
                }
            }
        }
        if terms.is_empty() {
            return;
        }
        for (param, term) in &terms {
            inner
                .terms
                .entry((rtype, param))
                .or_default()
                .entry(term.clone())
                .or_default()
                .insert(id.clone());
        }
        inner.by_resource.insert((rtype, id.clone()), terms);
    }

    /// Ids having a term equal to (or, with `prefix`, starting with) any of `values`.
    /// Returns `None` if more than `limit` ids match.
    pub fn lookup(
        &self,
        rtype: ResourceType,
        param: &str,
        values: &[String],
        prefix: bool,
        limit: usize,
    ) -> Option<BTreeSet<ResourceId>> {
        let g = self.inner.read().ok()?;
        let mut out = BTreeSet::new();
        let Some(map) = g
            .terms
            .iter()
            .find(|((t, p), _)| *t == rtype && *p == param)
            .map(|(_, m)| m)
        else {
            return Some(out);
        };
        for v in values {
            if prefix {
                for (term, ids) in map.range(v.clone()..) {
                    if !term.starts_with(v.as_str()) {
                        break;
                    }
                    out.extend(ids.iter().cloned());
                    if out.len() > limit {
                        return None;
                    }
                }
            } else if let Some(ids) = map.get(v) {
                out.extend(ids.iter().cloned());
            }
            if out.len() > limit {
                return None;
            }
        }
        Some(out)
    }

    /// Every id of this type that has terms.
    pub fn ids(&self, rtype: ResourceType) -> Vec<ResourceId> {
        self.inner
            .read()
            .map(|g| {
                g.by_resource
                    .keys()
                    .filter(|(t, _)| *t == rtype)
                    .map(|(_, i)| i.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ResourceId {
        ResourceId::new(s).unwrap()
    }

    #[test]
    fn prefix_and_exact_lookups_follow_updates() {
        let m = MemIndex::default();
        let t = ResourceType::Patient;
        m.set(
            t,
            &id("a"),
            vec![("name", "smith".into()), ("name", "john".into())],
        );
        m.set(t, &id("b"), vec![("name", "smithson".into())]);
        let got = m.lookup(t, "name", &["smi".into()], true, 10).unwrap();
        assert_eq!(got.len(), 2);
        let got = m.lookup(t, "name", &["smith".into()], false, 10).unwrap();
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![id("a")]);
        m.set(t, &id("a"), vec![("name", "jones".into())]);
        assert_eq!(
            m.lookup(t, "name", &["smith".into()], false, 10)
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            m.lookup(t, "name", &["j".into()], true, 10).unwrap().len(),
            1
        );
        m.set(t, &id("a"), vec![]);
        assert_eq!(
            m.lookup(t, "name", &["j".into()], true, 10).unwrap().len(),
            0
        );
        assert!(m.lookup(t, "name", &["s".into()], true, 0).is_none());
        assert_eq!(
            m.lookup(ResourceType::Practitioner, "name", &["s".into()], true, 10)
                .unwrap()
                .len(),
            0
        );
    }
}
