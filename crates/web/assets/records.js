// Vigil record browser. Data is only ever inserted with textContent (never
// innerHTML), so nothing from a record can run as markup.
"use strict";

const TOKEN_KEY = "vigil.token";
const $ = (id) => document.getElementById(id);

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function fhir(path) {
  const resp = await fetch("/fhir/" + path, {
    headers: { "Authorization": "Bearer " + token(), "Accept": "application/fhir+json" },
  });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const msg = body && body.issue ? body.issue.map((i) => i.diagnostics).join("; ") : resp.statusText;
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return body;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function humanName(p) {
  const n = (p.name || [])[0] || {};
  if (n.text) return n.text;
  return [(n.given || []).join(" "), n.family].filter(Boolean).join(" ") || "(no name)";
}

function codeText(cc) {
  if (!cc) return "";
  if (cc.text) return cc.text;
  const c = (cc.coding || [])[0] || {};
  return c.display || c.code || "";
}

function showSignedIn(on) {
  $("signin").hidden = on;
  $("browser").hidden = !on;
  if (!on) $("record").hidden = true;
  $("who").textContent = on ? "Signed in (bootstrap admin)" : "";
}

async function signIn(ev) {
  ev.preventDefault();
  const t = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, t);
  try {
    await fhir("Patient?_count=1");
    $("signin-error").textContent = "";
    $("token").value = "";
    showSignedIn(true);
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("signin-error").textContent = e.status === 401 ? "That token was not accepted." : "Sign-in failed: " + e.message;
  }
}

async function search(ev, url) {
  if (ev) ev.preventDefault();
  let path = url;
  if (!path) {
    const params = new URLSearchParams();
    const family = $("q-family").value.trim();
    const ident = $("q-identifier").value.trim();
    if (family) params.append("family", family);
    if (ident) params.append("identifier", ident);
    params.append("_count", "20");
    params.append("_total", "accurate");
    path = "Patient?" + params.toString();
  }
  $("search-status").textContent = "Searching…";
  try {
    const b = await fhir(path);
    renderResults(b);
  } catch (e) {
    $("search-status").textContent = "Search refused: " + e.message;
    $("results").hidden = true;
  }
}

function renderResults(bundle) {
  const tbody = $("results").querySelector("tbody");
  tbody.replaceChildren();
  const entries = (bundle.entry || []).filter((e) => e.search && e.search.mode === "match");
  for (const e of entries) {
    const p = e.resource;
    const tr = el("tr");
    const nameCell = el("td");
    const open = el("button", humanName(p), "link");
    open.type = "button";
    open.addEventListener("click", () => openRecord(p.id));
    nameCell.append(open);
    const ident = ((p.identifier || [])[0] || {}).value || "";
    tr.append(nameCell, el("td", p.birthDate || ""), el("td", p.gender || ""), el("td", ident), el("td", p.id));
    tbody.append(tr);
  }
  $("results").hidden = entries.length === 0;
  const total = bundle.total !== undefined ? bundle.total : entries.length;
  $("search-status").textContent = entries.length ? total + " patient(s) found." : "No patient found.";
  const pager = $("pager");
  pager.replaceChildren();
  const next = (bundle.link || []).find((l) => l.relation === "next");
  if (next) {
    const b = el("button", "Next page", "secondary");
    b.type = "button";
    b.addEventListener("click", () => search(null, next.url.replace(/^.*\/fhir\//, "")));
    pager.append(b);
  }
}

const SECTIONS = [
  ["Encounters", "Encounter", (r) => [r.period && r.period.start, (r.class || {}).display || (r.class || {}).code, r.status]],
  ["Appointments", "Appointment", (r) => [r.start, codeText((r.serviceType || [])[0]), r.status]],
  ["Conditions", "Condition", (r) => [r.recordedDate, codeText(r.code), codeText(r.clinicalStatus)]],
  ["Observations", "Observation", (r) => [r.effectiveDateTime, codeText(r.code), r.valueQuantity ? r.valueQuantity.value + " " + (r.valueQuantity.unit || "") : ""]],
  ["Medication requests", "MedicationRequest", (r) => [r.authoredOn, codeText(r.medicationCodeableConcept), r.status]],
  ["Clinical notes", "DocumentReference", (r) => [r.date, codeText(r.type), r.status]],
  ["Care teams", "CareTeam", (r) => [r.period && r.period.start, r.name, r.status]],
];

async function openRecord(id) {
  $("record").hidden = false;
  $("record-title").textContent = "Loading…";
  const body = $("record-body");
  body.replaceChildren();
  try {
    const p = await fhir("Patient/" + encodeURIComponent(id));
    $("record-title").textContent = humanName(p) + " — born " + (p.birthDate || "?");
    for (const [title, type, cols] of SECTIONS) {
      const b = await fhir(type + "?patient=" + encodeURIComponent(id) + "&_count=50");
      const rows = (b.entry || []).map((e) => e.resource);
      body.append(el("div", title + " (" + rows.length + ")", "section-title"));
      if (!rows.length) continue;
      const table = el("table");
      table.dataset.section = type;
      for (const r of rows) {
        const tr = el("tr");
        for (const c of cols(r)) tr.append(el("td", c || ""));
        table.append(tr);
      }
      body.append(table);
    }
  } catch (e) {
    $("record-title").textContent = "Could not open the record: " + e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("search-form").addEventListener("submit", (ev) => search(ev));
  $("signout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showSignedIn(false); });
  showSignedIn(!!token());
});
