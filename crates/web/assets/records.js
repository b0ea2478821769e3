// Vigil record browser. Data is only ever inserted with textContent (never
// innerHTML), so nothing from a record can run as markup.
"use strict";

const $ = (id) => document.getElementById(id);

// The session's CSRF token: the API accepts the session cookie only with it.
function csrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.getAttribute("content") : "";
}

async function fhir(path) {
  const resp = await fetch("/fhir/" + path, {
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf(), "Accept": "application/fhir+json" },
  });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const msg = body && body.issue
      ? body.issue.map((i) => i.diagnostics || (i.details && i.details.text) || i.code).join("; ")
      : resp.statusText;
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

// "2025-11-03T00:27:34.610461Z" → "2025-11-03 00:27 UTC"; plain dates stay as they are.
function when(v) {
  if (!v) return "";
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(v);
  if (!m) return v;
  return m[1] + " " + m[2] + (/Z$|\+00:00$/.test(v) ? " UTC" : "");
}

function codeText(cc) {
  if (!cc) return "";
  if (cc.text) return cc.text;
  const c = (cc.coding || [])[0] || {};
  return c.display || c.code || "";
}

// Bumped by every search, record load and sign-out, so that an answer arriving late
// (after a newer request, or after sign-out) is dropped instead of shown.
let searchGen = 0;
let recordGen = 0;

// Removes every search term and every piece of patient data from the page.
function clearData() {
  searchGen += 1;
  recordGen += 1;
  $("search-form").reset();
  $("search-status").textContent = "";
  $("results").hidden = true;
  $("results").querySelector("tbody").replaceChildren();
  $("pager").replaceChildren();
  $("record").hidden = true;
  $("record").removeAttribute("aria-busy");
  $("record-title").textContent = "Record";
  $("record-body").replaceChildren();
}

// A 401 means the session ended (timeout, sign-out elsewhere): drop the
// data and go to the sign-in page, which brings the user back here.
function refused(e) {
  if (e.status === 401) {
    clearData();
    window.location.assign("/signin?expired=1&next=%2F");
    return true;
  }
  return false;
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
  const gen = ++searchGen;
  $("search-status").textContent = "Searching…";
  try {
    const b = await fhir(path);
    if (gen !== searchGen) return;
    renderResults(b);
  } catch (e) {
    if (gen !== searchGen || refused(e)) return;
    $("search-status").textContent = "Search refused: " + e.message;
    $("results").hidden = true;
    $("pager").replaceChildren();
  }
}

// The _offset of a Bundle link (0 when absent).
function offsetOf(url) {
  const m = /[?&]_offset=(\d+)/.exec(url || "");
  return m ? Number(m[1]) : 0;
}

function pageButton(link, label) {
  const b = el("button", label, "secondary");
  b.type = "button";
  b.addEventListener("click", () => search(null, link.url.replace(/^.*\/fhir\//, "")));
  return b;
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
    open.addEventListener("click", () => {
      for (const row of tbody.querySelectorAll("tr.selected")) row.classList.remove("selected");
      tr.classList.add("selected");
      openRecord(p.id);
    });
    nameCell.append(open);
    const ident = ((p.identifier || [])[0] || {}).value || "";
    tr.append(nameCell, el("td", p.birthDate || ""), el("td", p.gender || ""), el("td", ident), el("td", p.id));
    tbody.append(tr);
  }
  $("results").hidden = entries.length === 0;
  const links = bundle.link || [];
  const link = (rel) => links.find((l) => l.relation === rel);
  const total = bundle.total !== undefined ? bundle.total : entries.length;
  const from = offsetOf((link("self") || {}).url) + 1;
  const to = from + entries.length - 1;
  let status = "No patient found.";
  if (entries.length && (link("next") || link("previous"))) {
    status = "Patients " + from + "–" + to + (bundle.total !== undefined ? " of " + total + " found." : ".");
  } else if (entries.length) {
    status = total + (total === 1 ? " patient found." : " patients found.");
  }
  $("search-status").textContent = status;
  const pager = $("pager");
  pager.replaceChildren();
  const prev = link("previous") || link("prev");
  const next = link("next");
  if (prev) pager.append(pageButton(prev, "Previous page"));
  if (next) pager.append(pageButton(next, "Next page"));
}

function quantity(q) {
  if (!q || q.value === undefined) return "";
  return q.value + (q.unit ? " " + q.unit : "");
}

// Title, FHIR type, column headings, and the cells of one resource (the first is its date).
const SECTIONS = [
  ["Encounters", "Encounter", ["Start", "Class", "Status"],
    (r) => [r.period && r.period.start, (r.class || {}).display || (r.class || {}).code, r.status]],
  ["Appointments", "Appointment", ["Start", "Service", "Status"],
    (r) => [r.start, codeText((r.serviceType || [])[0]), r.status]],
  ["Conditions", "Condition", ["Recorded", "Condition", "Clinical status"],
    (r) => [r.recordedDate, codeText(r.code), codeText(r.clinicalStatus)]],
  ["Observations", "Observation", ["Effective", "Observation", "Value"],
    (r) => [r.effectiveDateTime, codeText(r.code), quantity(r.valueQuantity) || r.valueString || codeText(r.valueCodeableConcept)]],
  ["Medication requests", "MedicationRequest", ["Authored", "Medication", "Status"],
    (r) => [r.authoredOn, codeText(r.medicationCodeableConcept), r.status]],
  ["Clinical notes", "DocumentReference", ["Date", "Type", "Status"],
    (r) => [r.date, codeText(r.type), r.status]],
  ["Care teams", "CareTeam", ["Since", "Team", "Status"],
    (r) => [r.period && r.period.start, r.name, r.status]],
];

function sectionTable(type, heads, rows) {
  const table = el("table", undefined, "record-table");
  table.dataset.section = type;
  const hr = el("tr");
  for (const h of heads) hr.append(el("th", h));
  table.append(el("thead"));
  table.tHead.append(hr);
  const tbody = el("tbody");
  for (const cells of rows) {
    const tr = el("tr");
    cells.forEach((c, i) => tr.append(el("td", i === 0 ? when(c) : c || "")));
    tbody.append(tr);
  }
  table.append(tbody);
  return table;
}

async function openRecord(id) {
  const gen = ++recordGen;
  const record = $("record");
  record.hidden = false;
  record.setAttribute("aria-busy", "true");
  $("record-title").textContent = "Loading…";
  const body = $("record-body");
  body.replaceChildren();
  record.scrollIntoView({ block: "nearest" });
  try {
    const q = "?patient=" + encodeURIComponent(id) + "&_count=50";
    const [p, ...bundles] = await Promise.all([
      fhir("Patient/" + encodeURIComponent(id)),
      ...SECTIONS.map(([, type]) => fhir(type + q)),
    ]);
    if (gen !== recordGen) return;
    $("record-title").textContent = humanName(p) + " — born " + (p.birthDate || "?");
    SECTIONS.forEach(([title, type, heads, cols], i) => {
      // Newest first; ISO dates sort as strings, undated rows last.
      const rows = (bundles[i].entry || []).map((e) => cols(e.resource))
        .sort((a, b) => String(b[0] || "").localeCompare(String(a[0] || "")));
      body.append(el("h3", title + " (" + rows.length + ")", "section-title"));
      if (rows.length) body.append(sectionTable(type, heads, rows));
    });
  } catch (e) {
    if (gen !== recordGen || refused(e)) return;
    body.replaceChildren();
    $("record-title").textContent = "Could not open the record: " + e.message;
  } finally {
    if (gen === recordGen) record.setAttribute("aria-busy", "false");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", (ev) => search(ev));
  // Signing out leaves the page: wipe what it shows first (and from the
  // back-forward cache's copy).
  const signout = $("signout");
  if (signout && signout.form) signout.form.addEventListener("submit", () => clearData());
});
