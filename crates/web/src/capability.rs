//! The CapabilityStatement: generated from what the code supports, so it stays truthful.

use fhir::search::{ParamKind, Strategy, params_for};
use model::ResourceType;
use serde_json::{Value, json};

use crate::WebState;

fn kind(k: &ParamKind) -> &'static str {
    match k {
        ParamKind::Token => "token",
        ParamKind::String => "string",
        ParamKind::Date => "date",
        ParamKind::Reference => "reference",
        ParamKind::Number => "number",
        ParamKind::Quantity => "quantity",
        ParamKind::Uri => "uri",
    }
}

fn strategy_note(s: &Strategy) -> &'static str {
    match s {
        Strategy::Blind => "Exact match through a keyed blind index.",
        Strategy::DayBucket => {
            "Day-bucket blind index, exact filtering after decryption; open-ended ranges need another selective parameter."
        }
        Strategy::Memory => {
            "Prefix (default) and :exact match through an in-memory index built from decrypted data; never written to disk."
        }
        Strategy::FilterOnly => {
            "Not indexed (low cardinality): filters results of other parameters after decryption."
        }
    }
}

fn resource(rtype: ResourceType) -> Value {
    let params: Vec<Value> = params_for(rtype)
        .iter()
        .map(|p| json!({"name": p.name, "type": kind(&p.kind), "documentation": format!("{} {}", p.doc, strategy_note(&p.strategy)).trim().to_owned()}))
        .collect();
    let include: Vec<String> = params_for(rtype)
        .iter()
        .filter(|p| matches!(p.kind, ParamKind::Reference))
        .map(|p| format!("{rtype}:{}", p.name))
        .collect();
    let mut revinclude = Vec::new();
    for other in ResourceType::ALL {
        for p in params_for(other) {
            if matches!(p.kind, ParamKind::Reference) && p.targets.contains(&rtype) {
                revinclude.push(format!("{other}:{}", p.name));
            }
        }
    }
    let mut all_params = vec![
        json!({"name": "_id", "type": "token"}),
        json!({"name": "_lastUpdated", "type": "date"}),
    ];
    all_params.extend(params);
    let mut out = json!({
        "type": rtype.as_str(),
        "profile": format!("http://hl7.org/fhir/StructureDefinition/{rtype}"),
        "interaction": [
            {"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "delete"},
            {"code": "history-instance"}, {"code": "create"}, {"code": "search-type"}
        ],
        "versioning": "versioned-update",
        "readHistory": true,
        "updateCreate": true,
        "conditionalCreate": false,
        "conditionalRead": "not-supported",
        "conditionalUpdate": false,
        "conditionalDelete": "not-supported",
        "referencePolicy": ["literal", "local"],
        "searchInclude": include,
        "searchRevInclude": revinclude,
        "searchParam": all_params
    });
    if rtype == ResourceType::Patient
        && let Some(obj) = out.as_object_mut()
    {
        obj.insert(
            "operation".into(),
            json!([{
                "name": "everything",
                "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                "documentation": "GET only. The patient's compartment as far as the access policy allows the caller to export it (rule P3 for the patient, P6 for a clinician caring for them); what it does not allow is left out. Parameters: _type (comma-separated types) and _since (an instant); others are refused with 400. More than the export limit is refused with 400 too-costly, never truncated."
            }]),
        );
    }
    out
}

/// SMART on FHIR: how apps get tokens (the Python `fhirclient` reads the
/// OAuth URIs from here). Absolute URLs, derived from the FHIR base.
fn security(base: &str) -> Value {
    let ep = crate::oauth_routes::endpoints_of(base);
    let i = &ep.issuer;
    json!({
        "cors": true,
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"
            }],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"
        }],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "authorize", "valueUri": format!("{i}/oauth/authorize")},
                {"url": "token", "valueUri": ep.token_url},
                {"url": "introspect", "valueUri": format!("{i}/oauth/introspect")},
                {"url": "revoke", "valueUri": format!("{i}/oauth/revoke")}
            ]
        }],
        "description": "Every request except metadata needs an Authorization: Bearer access token from the OAuth endpoints (SMART App Launch; see /.well-known/smart-configuration), or, for Vigil's own pages, the session cookie with its CSRF token in X-CSRF-Token."
    })
}

/// The audit trail, read-only, for privacy officers (`crate::audit_routes`).
fn audit_event() -> Value {
    let params: Vec<Value> = crate::audit_routes::SEARCH_PARAMS
        .iter()
        .map(|(name, kind, doc)| json!({"name": name, "type": kind, "documentation": doc}))
        .chain([json!({"name": "_count", "type": "number", "documentation": "Page size (at most 500)."})])
        .collect();
    json!({
        "type": "AuditEvent",
        "profile": "http://hl7.org/fhir/StructureDefinition/AuditEvent",
        "documentation": "The tamper-evident audit trail (IHE BALP shape), for privacy officers and system/AuditEvent.rs tokens; newest first. Other parameters are refused with 400. The log itself is public at /audit (C2SP tlog-tiles).",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "no-version",
        "readHistory": false,
        "updateCreate": false,
        "conditionalCreate": false,
        "conditionalRead": "not-supported",
        "conditionalUpdate": false,
        "conditionalDelete": "not-supported",
        "searchParam": params
    })
}

pub fn statement(state: &WebState, base: &str) -> Value {
    let cfg = state.vigil.config();
    let integrity = if cfg.referential_integrity {
        "References to served types must resolve on write (422 otherwise)."
    } else {
        "Referential integrity on write is switched off on this server."
    };
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": state.vigil.now().to_fhir_instant(),
        "publisher": "Vigil",
        "kind": "instance",
        "software": {"name": "Vigil", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Vigil: encrypted FHIR R4 record store", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": format!(
                "Resources are encrypted at rest with a key per patient. Search parameters are answered as each parameter's documentation says. {integrity} Limits: body {} bytes, {} Bundle entries, strings {} bytes, search window {} matches, _count at most {}. Unsupported parameters and modifiers are refused with 400.",
                cfg.limits.max_body_bytes, cfg.limits.max_bundle_entries, cfg.limits.max_string_len, cfg.limits.search_window, cfg.limits.max_count
            ),
            "security": security(base),
            "resource": ResourceType::ALL.iter().map(|t| resource(*t)).chain([audit_event()]).collect::<Vec<_>>(),
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "searchParam": [
                {"name": "_count", "type": "number", "documentation": "Page size."},
                {"name": "_offset", "type": "number", "documentation": "Paging offset, used by next links."},
                {"name": "_total", "type": "token", "documentation": "none (default) or accurate."},
                {"name": "_sort", "type": "token", "documentation": "date, _lastUpdated (and birthdate for Patient), optionally descending with '-'."}
            ]
        }]
    })
}
