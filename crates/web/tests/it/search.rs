use serde_json::{Value, json};

use crate::{T, patient, setup};

async fn seed(t: &T) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, (family, given, gender, birth)) in [
        ("Smith", "Anna", "female", "1970-01-02"),
        ("Smithson", "Bob", "male", "1980-03-04"),
        ("Jones", "Carla", "female", "1990-05-06"),
        ("Müller", "Dieter", "male", "1970-01-02"),
    ]
    .iter()
    .enumerate()
    {
        let p = json!({
            "resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": format!("M{i}")}],
            "name": [{"family": family, "given": [given]}],
            "gender": gender, "birthDate": birth
        });
        let r = t.post("/fhir/Patient", &p).await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    ids
}

fn ids_of(b: &Value) -> Vec<String> {
    let mut v: Vec<String> = b["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn patient_search_by_name_identifier_birthdate_and_gender() {
    let t = setup().await;
    let ids = seed(&t).await;
    let check = |q: &'static str, want: Vec<usize>| {
        let ids = ids.clone();
        let t = &t;
        async move {
            let r = t.get(&format!("/fhir/Patient?{q}")).await;
            assert_eq!(r.status, 200, "{q}: {}", r.body);
            assert_eq!(r.body["type"], "searchset");
            let mut expected: Vec<String> = want.iter().map(|i| ids[*i].clone()).collect();
            expected.sort();
            assert_eq!(ids_of(&r.body), expected, "{q}");
        }
    };
    check("family=smith", vec![0, 1]).await;
    check("family:exact=Smith", vec![0]).await;
    check("name=carl", vec![2]).await;
    check("given=bob", vec![1]).await;
    check("family=muller", vec![3]).await;
    check("identifier=urn:mrn|M2", vec![2]).await;
    check("identifier=M1", vec![1]).await;
    check("identifier=other|M1", vec![]).await;
    check("birthdate=1970-01-02", vec![0, 3]).await;
    check("birthdate=1970-01-02&gender=male", vec![3]).await;
    check("family=smith&gender=female", vec![0]).await;
    check("family=smith,jones", vec![0, 1, 2]).await;
    check("gender=female", vec![0, 2]).await;
}

#[tokio::test]
async fn paging_totals_and_links() {
    let t = setup().await;
    seed(&t).await;
    let r = t
        .get("/fhir/Patient?gender=female,male&_count=3&_total=accurate")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["total"], 4);
    assert_eq!(r.body["entry"].as_array().unwrap().len(), 3);
    let links = r.body["link"].as_array().unwrap();
    let next = links.iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = next.strip_prefix("http://vigil.test").unwrap();
    let r2 = t.get(path).await;
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body["entry"].as_array().unwrap().len(), 1);
    assert!(
        r2.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["relation"] != "next")
    );
    // Without _total, no total.
    let r3 = t.get("/fhir/Patient?gender=female").await;
    assert!(r3.body.get("total").is_none());
    let r4 = t.get("/fhir/Patient?_summary=count&gender=female").await;
    assert_eq!(r4.body["total"], 2);
    assert!(r4.body.get("entry").is_none());
}

#[tokio::test]
async fn clinical_search_with_includes_chains_and_has() {
    let t = setup().await;
    let ids = seed(&t).await;
    for (i, (pid, code, date)) in [
        (0usize, "8867-4", "2024-02-01T10:00:00Z"),
        (0, "8480-6", "2024-03-01T10:00:00Z"),
        (2, "8867-4", "2023-01-01T10:00:00Z"),
    ]
    .iter()
    .enumerate()
    {
        let obs = json!({
            "resourceType": "Observation", "status": if i == 2 {"amended"} else {"final"},
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{}", ids[*pid])},
            "effectiveDateTime": date
        });
        assert_eq!(t.post("/fhir/Observation", &obs).await.status, 201);
    }
    let count = |b: &Value, mode: &str| {
        b["entry"]
            .as_array()
            .map(|a| a.iter().filter(|e| e["search"]["mode"] == mode).count())
            .unwrap_or(0)
    };
    let r = t
        .get(&format!("/fhir/Observation?subject=Patient/{}", ids[0]))
        .await;
    assert_eq!(count(&r.body, "match"), 2);
    let r = t
        .get(&format!("/fhir/Observation?patient={}", ids[0]))
        .await;
    assert_eq!(count(&r.body, "match"), 2, "{}", r.body);
    let r = t
        .get("/fhir/Observation?code=http://loinc.org|8867-4")
        .await;
    assert_eq!(count(&r.body, "match"), 2);
    let r = t.get("/fhir/Observation?code=8867-4&status=final").await;
    assert_eq!(count(&r.body, "match"), 1);
    let r = t.get("/fhir/Observation?date=2024").await;
    assert_eq!(count(&r.body, "match"), 2);
    let r = t
        .get("/fhir/Observation?date=ge2024-02-15&date=le2024-12-31")
        .await;
    assert_eq!(count(&r.body, "match"), 1, "{}", r.body);
    let r = t
        .get(&format!(
            "/fhir/Observation?subject=Patient/{}&_sort=-date",
            ids[0]
        ))
        .await;
    let dates: Vec<&str> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["effectiveDateTime"].as_str().unwrap())
        .collect();
    assert_eq!(dates, vec!["2024-03-01T10:00:00Z", "2024-02-01T10:00:00Z"]);
    // _include the subject.
    let r = t
        .get("/fhir/Observation?code=8480-6&_include=Observation:subject")
        .await;
    assert_eq!(count(&r.body, "match"), 1);
    assert_eq!(count(&r.body, "include"), 1);
    // _revinclude from Patient.
    let r = t
        .get(&format!(
            "/fhir/Patient?_id={}&_revinclude=Observation:subject",
            ids[0]
        ))
        .await;
    assert_eq!(count(&r.body, "match"), 1);
    assert_eq!(count(&r.body, "include"), 2);
    // Chained.
    let r = t
        .get("/fhir/Observation?subject:Patient.identifier=urn:mrn|M2")
        .await;
    assert_eq!(count(&r.body, "match"), 1, "{}", r.body);
    // _has.
    let r = t
        .get("/fhir/Patient?_has:Observation:subject:code=8480-6")
        .await;
    assert_eq!(ids_of(&r.body), vec![ids[0].clone()], "{}", r.body);
    // Unsupported modifier and bad prefix are named.
    let r = t.get("/fhir/Patient?name:contains=smi").await;
    assert_eq!(r.status, 400);
    let r = t.get("/fhir/Observation?date=xx2024").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn deleted_resources_leave_search_and_names_follow_updates() {
    let t = setup().await;
    let r = t.post("/fhir/Patient", &patient("Renamed")).await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let mut p = r.body.clone();
    p["name"][0]["family"] = json!("Newname");
    assert_eq!(t.put(&format!("/fhir/Patient/{id}"), &p).await.status, 200);
    assert!(ids_of(&t.get("/fhir/Patient?family=renamed").await.body).is_empty());
    assert_eq!(
        ids_of(&t.get("/fhir/Patient?family=newn").await.body),
        vec![id.clone()]
    );
    assert_eq!(t.delete(&format!("/fhir/Patient/{id}")).await.status, 204);
    assert!(ids_of(&t.get("/fhir/Patient?family=newn").await.body).is_empty());
    assert!(ids_of(&t.get("/fhir/Patient?identifier=MRN-Renamed").await.body).is_empty());
}

#[tokio::test]
async fn listing_a_type_pages_by_id_beyond_the_search_window() {
    let t = crate::setup_with(app::Config {
        limits: app::Limits {
            search_window: 3,
            ..app::Limits::default()
        },
        ..app::Config::default()
    })
    .await;
    for i in 0..5 {
        assert_eq!(
            t.post("/fhir/Patient", &patient(&format!("Lister{i}")))
                .await
                .status,
            201
        );
    }
    // No criteria: pages in id order, decrypting only the page.
    let r = t.get("/fhir/Patient?_count=2&_total=accurate").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["total"], 5);
    let mut seen = ids_of(&r.body);
    let mut next = r.body["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| l["url"].as_str().unwrap().to_owned());
    while let Some(url) = next {
        let page = t.get(url.strip_prefix("http://vigil.test").unwrap()).await;
        assert_eq!(page.status, 200);
        seen.extend(ids_of(&page.body));
        next = page.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);
    // Criteria that must be checked after decryption stay bounded by the window.
    let r = t.get("/fhir/Patient?gender=female").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["issue"][0]["code"], "too-costly");
}
