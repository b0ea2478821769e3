'use strict';
// Telehealth video consultations in real headless Chromium (fake camera and microphone),
// driven by playwright-core, with Debian's coturn as the relay. cargo xtask ext runs it, the
// server and coturn inside a network namespace of their own (crates/xtask/src/consult.rs):
// Chromium gathers no ICE candidates with loopback alone, so the namespace has a veth pair
// (10.77.0.1, 10.77.0.2); pages are served at http://localhost:PORT (a secure context).
//
// 0. Preflight, without Vigil: two RTCPeerConnections on a page of this script's own relay a
//    call through coturn (iceTransportPolicy 'relay'), so a failure later is Vigil's.
// 1. The physician dr.consult signs in (enrolling TOTP), opens a room for the booked Appointment
//    on /consult and sends a date-of-birth invite; the administrator reads its link on
//    /admin/outbox. A link-preview bot fetches it (generic, no-store, no-referrer, nothing
//    identifying) and the link still works: the patient (a phone-sized context) answers a wrong
//    birth date, then the right one, and waits on /visit; the physician admits them. Both sides
//    decode video (framesDecoded > 10) and audio (totalSamplesReceived > 0) within 30 s, on a
//    direct path, DTLS-SRTP; the time from the admit click to the first decoded frame is printed.
// 2. Chat both ways; the physician's messages carrying the other patient's phone or name with
//    birth date are blocked (not delivered, #dlp-block with its lesson) while a near miss and this
//    patient's own phone and MRN go through; a blocked message is sent anyway with a reason.
// 3. A second room (the second Appointment) with ?relay=1 on both pages: a relayed call. In the
//    page, an expired TURN credential (computed here with the shared secret) gathers no relay
//    candidate, the minted one does.
// 4. A WebSocket upgrade with the patient's cookie and a foreign Origin gets 403; a separate
//    invite locks after five wrong birth dates.
//
// Env: VIGIL_URL (http://localhost:PORT), VIGIL_ADMIN_USER / VIGIL_ADMIN_PASSWORD, VIGIL_DR_USER /
// VIGIL_DR_PASSWORD, VIGIL_CONSULT_PATIENT, VIGIL_CONSULT_OTHER, VIGIL_CONSULT_APPTS (two
// Appointment ids), VIGIL_TURN_SECRET / VIGIL_TURN_HOST / VIGIL_TURN_PORT (coturn's
// static-auth-secret and address); CHROMIUM (default /usr/bin/chromium). Prints how long each
// step took and the time to first frame; never asserts on time.

const crypto = require('crypto');
const http = require('http');
const { short } = require('./common');
const {
  runFlow, watch, Timer, pathOf, navigating, errorsOn, passwordStep, enrolTotp,
} = require('./browser-common');

const NEED = [
  'VIGIL_URL', 'VIGIL_ADMIN_USER', 'VIGIL_ADMIN_PASSWORD', 'VIGIL_DR_USER', 'VIGIL_DR_PASSWORD',
  'VIGIL_CONSULT_PATIENT', 'VIGIL_CONSULT_OTHER', 'VIGIL_CONSULT_APPTS',
  'VIGIL_TURN_SECRET', 'VIGIL_TURN_HOST', 'VIGIL_TURN_PORT',
];
// As the harness PUTs them (crates/xtask/src/consult.rs).
const PATIENT = {
  given: 'Rosa', family: 'Delgado', birthDate: '1961-03-14', phone: '+1 617 555 0142', email: 'rosa@example.org', mrn: 'MRN-40211',
};
const OTHER = { given: 'Walter', family: 'Finch', birthDate: '1958-11-02', phone: '+1 617 555 0199' };
const CLINICIAN = { given: 'Imani', family: 'Okafor' };
const WRONG_DATES = ['1961-03-15', '1960-03-14', '1961-04-14', '1916-03-14', '1962-03-14'];

const MEDIA_ARGS = ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'];
const DESKTOP = { args: MEDIA_ARGS };
const PHONE = {
  args: MEDIA_ARGS,
  viewport: { width: 390, height: 844 },
  isMobile: true,
  hasTouch: true,
  deviceScaleFactor: 3,
  userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36',
};
const MEDIA_WAIT = 30000;
const FIRST_FRAME_TARGET_MS = 3000;
// Status codes the check-in pages may answer on purpose (wrong answers, the locked invite).
const CHECK_CODES = [400, 401, 403, 409, 410, 422, 423, 429];
const BOT_AGENTS = [
  'Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)',
  'facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)',
  'WhatsApp/2.23.20.0 A',
];

function env() {
  const e = process.env;
  return {
    base: (e.VIGIL_URL || '').replace(/\/+$/, ''),
    missing: NEED.filter((k) => !e[k]),
    admin: { username: e.VIGIL_ADMIN_USER, password: e.VIGIL_ADMIN_PASSWORD },
    dr: { username: e.VIGIL_DR_USER, password: e.VIGIL_DR_PASSWORD },
    patient: e.VIGIL_CONSULT_PATIENT,
    other: e.VIGIL_CONSULT_OTHER,
    appts: (e.VIGIL_CONSULT_APPTS || '').split(',').filter(Boolean),
    turn: { secret: e.VIGIL_TURN_SECRET, host: e.VIGIL_TURN_HOST, port: Number(e.VIGIL_TURN_PORT) },
  };
}

async function main() {
  await runFlow('consult', env(), run);
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
const textOf = async (page, sel) => ((await page.textContent(sel, { timeout: 2000 }).catch(() => null)) || '').trim();
const visible = (page, sel, timeout = 10000) => page.waitForSelector(sel, { state: 'visible', timeout }).then(() => true).catch(() => false);
const ms = (n) => (n === null || n === undefined ? 'never' : `${n} ms`);

// A TURN REST credential as coturn's use-auth-secret checks it: `expiry:id`, base64(HMAC-SHA1).
function turnCredential(secret, expiry, id) {
  const username = `${expiry}:${id}`;
  return { username, credential: crypto.createHmac('sha1', secret).update(username).digest('base64') };
}

// ---- in the page ----

// One snapshot of the call's statistics (window.vigilCall.pc), or null when there is no call yet
// or the page is navigating.
async function callStats(page) {
  return page.evaluate(async () => {
    const call = window.vigilCall;
    if (!call || !call.pc) return null;
    const stats = await call.pc.getStats();
    const out = { frames: 0, samples: 0, pairs: [] };
    let transport = null;
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') out.frames = Math.max(out.frames, s.framesDecoded || 0);
      if (s.type === 'inbound-rtp' && s.kind === 'audio') out.samples = Math.max(out.samples, s.totalSamplesReceived || 0);
      if (s.type === 'transport' && s.selectedCandidatePairId) transport = s;
    });
    if (transport) {
      const pair = stats.get(transport.selectedCandidatePairId);
      const local = pair && stats.get(pair.localCandidateId);
      const remote = pair && stats.get(pair.remoteCandidateId);
      Object.assign(out, {
        dtls: transport.dtlsState, srtp: transport.srtpCipher || null, tls: transport.tlsVersion || null,
        local: local ? `${local.candidateType} ${local.protocol} ${local.address || local.ip}:${local.port}${local.relayProtocol ? ` via ${local.relayProtocol}` : ''}` : null,
        remote: remote ? `${remote.candidateType} ${remote.protocol} ${remote.address || remote.ip}:${remote.port}` : null,
        localType: local ? local.candidateType : null,
        remoteType: remote ? remote.candidateType : null,
      });
    }
    return out;
  }).catch(() => null);
}

// The page's call object, for failure messages: its path, its connections and their states.
async function callState(page) {
  return page.evaluate(() => {
    const call = window.vigilCall;
    if (!call) return null;
    return {
      state: call.state, path: call.path, pcs: call.pcs ? call.pcs.size : null,
      pc: call.pc ? { connection: call.pc.connectionState, ice: call.pc.iceConnectionState } : null,
      error: (document.getElementById('consult-error') || {}).textContent || null,
    };
  }).catch((e) => ({ error: String(e) }));
}

// Polls the call statistics of every side from `since` (ms) until each decodes more than 10
// video frames and has received audio, or MEDIA_WAIT passes; returns, per side, the first
// decoded frame's delay and the last snapshot.
async function waitForMedia(sides, since) {
  const result = new Map(sides.map((s) => [s.label, { first: null, done: null, last: null }]));
  const deadline = since + MEDIA_WAIT;
  while (Date.now() < deadline) {
    await Promise.all(sides.map(async ({ label, page }) => {
      const res = result.get(label);
      if (res.done !== null) return;
      const snap = await callStats(page);
      const now = Date.now();
      if (!snap) return;
      res.last = snap;
      if (res.first === null && snap.frames > 0) res.first = now - since;
      if (snap.frames > 10 && snap.samples > 0) res.done = now - since;
    }));
    if ([...result.values()].every((res) => res.done !== null)) break;
    await sleep(50);
  }
  return result;
}

// Gathers ICE candidates with `iceServers` and iceTransportPolicy 'relay' (a data channel, so no
// media is needed): the candidates and the icecandidateerror events.
async function gatherRelay(page, iceServers) {
  return page.evaluate(async (servers) => {
    const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: 'relay' });
    const candidates = [];
    const errors = [];
    pc.onicecandidate = (e) => { if (e.candidate && e.candidate.candidate) candidates.push(e.candidate.candidate); };
    pc.onicecandidateerror = (e) => errors.push({ url: e.url, code: e.errorCode, text: e.errorText });
    const done = new Promise((res) => {
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') res(); };
      setTimeout(res, 15000);
    });
    pc.createDataChannel('probe');
    await pc.setLocalDescription();
    await done;
    const state = pc.iceGatheringState;
    pc.close();
    return { candidates, errors, state };
  }, iceServers);
}

// ---- 0. the relay alone ----

const PREFLIGHT_PAGE = '<!doctype html><meta charset="utf-8"><title>relay preflight</title><video id="remote" autoplay playsinline muted></video>';

async function preflight(cfg, r, open, t) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(PREFLIGHT_PAGE);
  });
  await new Promise((res) => server.listen(0, '127.0.0.1', res));
  try {
    const ctx = await open(DESKTOP);
    const page = ctx.pages()[0] || (await ctx.newPage());
    await page.goto(`http://localhost:${server.address().port}/`);
    const cred = turnCredential(cfg.turn.secret, Math.floor(Date.now() / 1000) + 600, 'preflight');
    const iceServers = [{ urls: [`turn:${cfg.turn.host}:${cfg.turn.port}?transport=udp`], ...cred }];
    const res = await page.evaluate(async (servers) => {
      const a = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: 'relay' });
      const b = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: 'relay' });
      const errors = [];
      a.onicecandidate = (e) => { if (e.candidate) b.addIceCandidate(e.candidate); };
      b.onicecandidate = (e) => { if (e.candidate) a.addIceCandidate(e.candidate); };
      a.onicecandidateerror = (e) => errors.push(`${e.url} ${e.errorCode} ${e.errorText}`);
      b.ontrack = (e) => { document.getElementById('remote').srcObject = e.streams[0]; };
      const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
      for (const track of stream.getTracks()) a.addTrack(track, stream);
      await a.setLocalDescription();
      await b.setRemoteDescription(a.localDescription);
      await b.setLocalDescription();
      await a.setRemoteDescription(b.localDescription);
      const start = Date.now();
      let out = { frames: 0, samples: 0 };
      while (Date.now() - start < 20000) {
        await new Promise((res) => setTimeout(res, 100));
        const stats = await b.getStats();
        out = { frames: 0, samples: 0, errors };
        stats.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') out.frames = s.framesDecoded || 0;
          if (s.type === 'inbound-rtp' && s.kind === 'audio') out.samples = s.totalSamplesReceived || 0;
          if (s.type === 'transport' && s.selectedCandidatePairId) {
            const pair = stats.get(s.selectedCandidatePairId);
            const local = pair && stats.get(pair.localCandidateId);
            out.local = local && local.candidateType;
          }
        });
        if (out.frames > 10 && out.samples > 0) break;
      }
      out.ms = Date.now() - start;
      for (const track of stream.getTracks()) track.stop();
      a.close();
      b.close();
      return out;
    }, iceServers);
    console.log(`(preflight: ${JSON.stringify(res)})`);
    const ok = r.check(res.frames > 10 && res.samples > 0 && res.local === 'relay',
      `preflight (no Vigil): coturn at ${cfg.turn.host}:${cfg.turn.port} relays a call between two RTCPeerConnections (framesDecoded > 10, audio, relay candidates)`,
      short(res));
    await ctx.close();
    t.lap('preflight: a call through coturn alone');
    return ok;
  } finally {
    server.close();
  }
}

// ---- the clinician's and the administrator's pages ----

// Opens (or finds) the room of `appt` from /consult; returns its id, the browser on its page.
async function openRoom(cfg, r, page, appt) {
  const res = await page.goto(`${cfg.base}/consult`);
  if (!r.check(res && res.status() === 200 && pathOf(page) === '/consult', `/consult answers 200 for ${cfg.dr.username}`,
    `${res && res.status()} ${page.url()} ${short(await errorsOn(page))}`)) return null;
  const row = page.locator(`tr[data-appointment="${appt}"]`);
  if (!r.check(await row.count() === 1, `/consult lists the appointment ${appt} (tr[data-appointment])`,
    short(await page.$$eval('tr[data-appointment]', (trs) => trs.map((tr) => tr.getAttribute('data-appointment')))))) return null;
  const button = row.locator('button.open-room');
  if (!r.check(await button.count() === 1, `the row of ${appt} has button.open-room`, short(await row.innerHTML()))) return null;
  await navigating(page, () => button.click());
  const m = /^\/consult\/room\/([^/?#]+)$/.exec(pathOf(page));
  if (!r.check(m !== null, `button.open-room opens /consult/room/<id>`, `${page.url()} ${short(await errorsOn(page))}`)) return null;
  const room = decodeURIComponent(m[1]);
  await page.goto(`${cfg.base}/consult`);
  const link = page.locator(`tr[data-appointment="${appt}"] a.room-link`);
  r.check(await link.count() === 1 && (await link.getAttribute('href')).includes(`/consult/room/${m[1]}`),
    `/consult now links the open room (a.room-link)`, short(await page.locator(`tr[data-appointment="${appt}"]`).innerHTML().catch(() => '')));
  return room;
}

// Sends an invite from the room page; returns whether #invite-status says it was sent.
async function sendInvite(r, page, { method, channel, to }, what) {
  const form = page.locator('form#invite');
  if (!r.check(await form.count() === 1, `${what}: the room page has form#invite`, page.url())) return false;
  await form.locator('select[name=method]').selectOption(method);
  await form.locator('select[name=channel]').selectOption(channel);
  await form.locator('input[name=to]').fill(to);
  await navigating(page, () => page.click('button#send-invite'));
  await visible(page, '#invite-status');
  const status = await textOf(page, '#invite-status');
  return r.check(/sent/i.test(status), `${what}: #invite-status says the invite was sent (${method} by ${channel})`,
    `${JSON.stringify(status)} ${page.url()} ${short(await errorsOn(page))}`);
}

// The newest /join/ link on the outbox page not in `seen`, looked for a few times.
async function inviteLink(cfg, r, admin, seen, what) {
  let link = null;
  for (let i = 0; i < 15 && !link; i += 1) {
    await admin.goto(`${cfg.base}/admin/outbox`);
    const bodies = await admin.locator('article.message pre.body').allTextContents();
    for (const body of bodies) {
      const m = /(https?:\/\/[^\s<>"]+\/join\/[A-Za-z0-9_\-.~%]+)/.exec(body);
      if (m && !seen.has(m[1])) { link = m[1]; break; }
    }
    if (!link) await sleep(1000);
  }
  if (!r.check(link !== null, `${what}: /admin/outbox shows the invite with its /join/ link`, admin.url())) return null;
  seen.add(link);
  r.check(link.startsWith(`${cfg.base}/join/`), `${what}: the link points at this server (${cfg.base}/join/…)`, link.replace(/\/join\/.*/, '/join/…'));
  return link;
}

// ---- the patient's pages ----

// Answers the check on the join page; `answer` is a birth date.
async function answerCheck(page, answer) {
  await page.fill('input#dob', answer);
  await navigating(page, () => page.click('button#check-submit'));
}

// From the join link to the waiting room: one wrong birth date, then the right one.
async function checkIn(cfg, r, page, link, phase, { wrongFirst = true, relay = false } = {}) {
  const res = await page.goto(link);
  if (!r.check(res && res.status() === 200, 'the join link answers 200', `${res && res.status()}`)) return false;
  const headers = res.headers();
  r.check(/no-store/.test(headers['cache-control'] || ''), 'the join page is Cache-Control: no-store', headers['cache-control']);
  r.check((headers['referrer-policy'] || '') === 'no-referrer', 'the join page is Referrer-Policy: no-referrer', headers['referrer-policy']);
  // The contract says "Video visit"; the product name after it identifies no one either.
  const title = await page.title();
  r.check(/^Video visit( — Vigil)?$/.test(title), `the join page is titled generically ("${title}")`, title);
  const text = await page.textContent('body');
  const leaks = identifying(text);
  r.check(leaks.length === 0, 'the join page names nothing identifying (patient, birth date, clinician)', short(leaks));
  if (!r.check(await page.locator('form#check input#dob').count() === 1 && await page.locator('button#check-submit').count() === 1,
    'the join page asks for the birth date (form#check, input#dob, button#check-submit)', short(text))) return false;
  if (wrongFirst) {
    phase.expect = CHECK_CODES;
    await answerCheck(page, WRONG_DATES[0]);
    const shown = await visible(page, '#check-error');
    const error = await textOf(page, '#check-error');
    r.check(shown && /\d/.test(error), 'a wrong birth date shows #check-error with the attempts left', JSON.stringify(error));
    r.check(pathOf(page) !== '/visit', 'a wrong birth date does not reach /visit', page.url());
    phase.expect = [];
  }
  await answerCheck(page, PATIENT.birthDate);
  await page.waitForURL((u) => u.pathname === '/visit', { timeout: 10000 }).catch(() => {});
  if (!r.check(pathOf(page) === '/visit', 'the right birth date leads to /visit', `${page.url()} ${await textOf(page, '#check-error')}`)) return false;
  if (relay) await page.goto(`${cfg.base}/visit?relay=1`);
  const waiting = await page.waitForSelector('#visit-status[data-state="waiting"]', { timeout: 10000 }).then(() => true).catch(() => false);
  return r.check(waiting, 'the patient waits (#visit-status data-state=waiting)',
    await page.getAttribute('#visit-status', 'data-state').catch(() => 'no #visit-status'));
}

// The patient's name, birth date, phone, e-mail, MRN and id, or the clinician's name, in `text`.
function identifying(text) {
  const words = [PATIENT.given, PATIENT.family, PATIENT.birthDate, PATIENT.phone, PATIENT.email, PATIENT.mrn, CLINICIAN.given, CLINICIAN.family,
    process.env.VIGIL_CONSULT_PATIENT];
  return words.filter((w) => w && text.includes(w));
}

// The clinician admits the one waiting participant; returns the time of the click.
async function admit(r, room, what) {
  const li = room.locator('#waiting li[data-participant]');
  let listed = await li.first().waitFor({ state: 'visible', timeout: 15000 }).then(() => true).catch(() => false);
  if (!listed) {
    console.log(`(${what}: the waiting patient did not appear live within 15 s: reloading the room page)`);
    await room.reload();
    listed = await li.first().waitFor({ state: 'visible', timeout: 10000 }).then(() => true).catch(() => false);
  }
  if (!r.check(listed, `${what}: the room page lists the waiting patient (#waiting li[data-participant])`, await textOf(room, '#waiting'))) return null;
  r.check(await li.count() === 1 && await li.first().locator('button.admit').count() === 1 && await li.first().locator('button.deny').count() === 1,
    `${what}: one waiting participant, with button.admit and button.deny`, short(await room.locator('#waiting').innerHTML().catch(() => '')));
  const leaks = identifying(await li.first().textContent()).filter((w) => w === PATIENT.birthDate);
  r.check(leaks.length === 0, `${what}: the waiting entry does not show the answered birth date`, short(leaks));
  const clicked = Date.now();
  await li.first().locator('button.admit').click();
  return clicked;
}

// Both sides decode video and audio; checks the path and the security; prints the timings.
async function checkCall(r, sides, since, path, what) {
  const media = await waitForMedia(sides, since);
  for (const { label } of sides) {
    const m = media.get(label);
    console.log(`(${what}, ${label}: ${JSON.stringify(m.last)})`);
    r.check(m.done !== null, `${what}: the ${label} decodes video (framesDecoded > 10) and receives audio (totalSamplesReceived > 0) within ${MEDIA_WAIT / 1000} s`,
      short(m.last));
  }
  console.log(`time: ${what}: from the admit click to the first decoded frame: ${sides.map(({ label }) => `${label} ${ms(media.get(label).first)}`).join(', ')} (target <= ${FIRST_FRAME_TARGET_MS} ms, not asserted)`);
  console.log(`time: ${what}: from the admit click to framesDecoded > 10 with audio: ${sides.map(({ label }) => `${label} ${ms(media.get(label).done)}`).join(', ')}`);
  for (const { label, page } of sides) {
    const shown = await page.waitForSelector(`#call-path[data-path="${path}"]`, { timeout: 15000 }).then(() => true).catch(() => false);
    r.check(shown, `${what}: the ${label}'s #call-path says ${path}`, `${await page.getAttribute('#call-path', 'data-path').catch(() => 'no #call-path')}; ${JSON.stringify(await callState(page))}`);
    const security = await textOf(page, '#call-security');
    r.check(security.includes('DTLS-SRTP'), `${what}: the ${label}'s #call-security mentions DTLS-SRTP`, JSON.stringify(security));
    const last = media.get(label).last || {};
    const relayed = last.localType === 'relay' || last.remoteType === 'relay';
    r.check(path === 'relayed' ? relayed : !relayed && last.localType !== undefined,
      `${what}: the ${label}'s selected candidate pair is ${path === 'relayed' ? 'relayed' : 'not relayed'} (getStats)`, `${last.local} -> ${last.remote}`);
    r.check(last.dtls === 'connected' && Boolean(last.srtp), `${what}: the ${label}'s transport is DTLS connected with an SRTP cipher`, `${last.dtls} ${last.srtp}`);
    const video = await page.evaluate(() => {
      const v = document.querySelector('video#remote-video');
      const l = document.querySelector('video#local-video');
      return { remote: v ? { width: v.videoWidth, height: v.videoHeight, paused: v.paused, stream: Boolean(v.srcObject) } : null, local: l ? { width: l.videoWidth, stream: Boolean(l.srcObject) } : null };
    }).catch((e) => ({ error: String(e) }));
    r.check(video.remote && video.remote.width > 0 && video.local && video.local.stream,
      `${what}: the ${label}'s page shows the remote video (video#remote-video has frames) and its own (video#local-video)`, short(video));
  }
}

// ---- chat ----

async function chatTexts(page, from) {
  return page.$$eval(`#chat-log .chat-msg[data-from="${from}"]`, (els) => els.map((e) => e.textContent)).catch(() => []);
}

async function sendChat(page, text) {
  await page.fill('textarea#chat-text', text);
  await page.click('button#chat-send');
}

// Waits up to `timeout` for a message containing `marker` from `from` on `page`.
async function arrives(page, from, marker, timeout = 10000) {
  const until = Date.now() + timeout;
  while (Date.now() < until) {
    if ((await chatTexts(page, from)).some((t) => t.includes(marker))) return true;
    await sleep(200);
  }
  return false;
}

async function chat(r, room, visit, t) {
  if (!r.check(await room.locator('textarea#chat-text').count() === 1 && await visit.locator('textarea#chat-text').count() === 1,
    'both call pages have the chat (textarea#chat-text, button#chat-send)')) return;
  const hello = 'Hello doctor, I can see you. [c1]';
  await sendChat(visit, hello);
  r.check(await arrives(room, 'patient', '[c1]'), "the patient's message reaches the clinician's #chat-log (data-from=patient)");
  const reply = 'Good morning, I can see and hear you too. [c2]';
  await sendChat(room, reply);
  r.check(await arrives(visit, 'clinician', '[c2]'), "the clinician's message reaches the patient's #chat-log (data-from=clinician)");
  t.lap('chat both ways');

  // What may pass: a near miss of the other patient's phone, this patient's own phone and MRN.
  for (const [text, what] of [
    ['If anything changes, the front desk is at 617-555-0198. [c3]', 'a near miss of the other patient\'s phone (617-555-0198)'],
    [`We have your mobile as ${PATIENT.phone}, is that right? [c4]`, `this patient's own phone (${PATIENT.phone})`],
    [`Your record number is ${PATIENT.mrn} if the pharmacy asks. [c5]`, `this patient's own MRN (${PATIENT.mrn})`],
  ]) {
    const marker = text.slice(-4);
    await sendChat(room, text);
    r.check(await arrives(visit, 'clinician', marker), `the clinician's message with ${what} is delivered`,
      `patient's log: ${short(await chatTexts(visit, 'clinician'))}; #dlp-block visible: ${await room.isVisible('#dlp-block').catch(() => false)}`);
  }
  r.check(!(await room.isVisible('#dlp-block').catch(() => false)), 'no #dlp-block after messages that may pass');
  t.lap('chat: messages that pass');

  // What must not: the other patient's phone, and their name with birth date.
  const phone = 'Walter called, please ring him back on 617-555-0199 today. [c6]';
  await sendChat(room, phone);
  const blocked = await visible(room, '#dlp-block');
  const explanation = await textOf(room, '#dlp-block');
  const lesson = room.locator('#dlp-block a.dlp-lesson');
  r.check(blocked && explanation.length > 20, "a message with another patient's phone (617-555-0199) shows #dlp-block with an explanation", JSON.stringify(explanation));
  r.check(await lesson.count() === 1 && Boolean(await lesson.getAttribute('href')), '#dlp-block links its lesson (a.dlp-lesson)',
    `${await lesson.count()} ${await lesson.getAttribute('href').catch(() => null)}`);
  r.check(!explanation.includes('617-555-0199') && !explanation.includes(OTHER.family) && !explanation.includes(OTHER.given),
    "the explanation does not repeat the other patient's identifiers", JSON.stringify(explanation));
  await sleep(3000);
  r.check(!(await arrives(visit, 'clinician', '[c6]', 500)), "the blocked message is not delivered to the patient", short(await chatTexts(visit, 'clinician')));
  t.lap('chat: phone blocked');

  // Sent anyway, with a reason.
  if (await room.locator('input#dlp-reason').count() === 1 && await room.locator('button#dlp-override').count() === 1) {
    await room.fill('input#dlp-reason', 'The patient asked us to pass on her neighbour\'s call-back number.');
    await room.click('button#dlp-override');
    r.check(await arrives(visit, 'clinician', '[c6]'), 'with a reason (input#dlp-reason, button#dlp-override) the blocked message is sent anyway');
    const hidden = await room.waitForSelector('#dlp-block', { state: 'hidden', timeout: 5000 }).then(() => true).catch(() => false);
    r.check(hidden, '#dlp-block is hidden after the override');
  } else {
    r.fail('#dlp-block offers input#dlp-reason and button#dlp-override');
  }
  t.lap('chat: override');

  const nameDob = `Note for the chart: ${OTHER.given} ${OTHER.family} born ${OTHER.birthDate}. [c7]`;
  const wasVisible = await room.isVisible('#dlp-block').catch(() => false);
  await sendChat(room, nameDob);
  r.check(await visible(room, '#dlp-block'), `a message with "${OTHER.given} ${OTHER.family} born ${OTHER.birthDate}" shows #dlp-block${wasVisible ? ' (it was still visible before)' : ''}`);
  await sleep(3000);
  r.check(!(await arrives(visit, 'clinician', '[c7]', 500)), 'that message is not delivered to the patient', short(await chatTexts(visit, 'clinician')));
  t.lap('chat: name with birth date blocked');
}

// ---- refusals ----

// A WebSocket upgrade to /consult/ws?room=ROOM with `cookies` and `origin`: the status code (101
// when upgraded, the socket closed at once).
function upgrade(cfg, room, cookies, origin) {
  const port = Number(new URL(cfg.base).port);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      path: `/consult/ws?room=${encodeURIComponent(room)}`,
      headers: {
        Host: `localhost:${port}`,
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
        Origin: origin,
        Cookie: cookies,
      },
      timeout: 10000,
    });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(101); });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode); });
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end();
  });
}

async function cookieHeader(context) {
  return (await context.cookies()).filter((c) => c.domain === 'localhost').map((c) => `${c.name}=${c.value}`).join('; ');
}

// A link-preview bot fetches the link: generic page, no-store, no-referrer, nothing identifying.
async function previewBot(cfg, r, link) {
  for (const agent of BOT_AGENTS) {
    let res;
    try {
      res = await fetch(link, { headers: { 'User-Agent': agent, Accept: 'text/html' }, redirect: 'manual', signal: AbortSignal.timeout(10000) });
    } catch (e) {
      r.fail(`preview bot (${agent.split(' ')[0]}): fetching the link: ${e}`);
      continue;
    }
    const body = await res.text();
    const who = agent.split(/[ /]/)[0];
    r.check(res.status === 200, `preview bot (${who}): the link answers 200`, `${res.status}`);
    r.check(/no-store/.test(res.headers.get('cache-control') || '') && res.headers.get('referrer-policy') === 'no-referrer',
      `preview bot (${who}): Cache-Control no-store and Referrer-Policy no-referrer`, `${res.headers.get('cache-control')} | ${res.headers.get('referrer-policy')}`);
    const leaks = identifying(body);
    r.check(leaks.length === 0, `preview bot (${who}): the page names nothing identifying`, short(leaks));
  }
}

// A separate invite locks after five wrong birth dates.
async function lockout(cfg, r, page, link, phase) {
  const res = await page.goto(link);
  if (!r.check(res && res.status() === 200 && await page.locator('input#dob').count() === 1, 'lockout: the separate invite opens its check', `${res && res.status()}`)) return;
  phase.expect = CHECK_CODES;
  const seen = [];
  for (const [i, wrong] of WRONG_DATES.entries()) {
    if (await page.locator('input#dob').count() !== 1) { seen.push(`no input#dob before attempt ${i + 1}`); break; }
    await answerCheck(page, wrong);
    await page.waitForSelector('#check-error, #check-locked', { state: 'visible', timeout: 10000 }).catch(() => {});
    seen.push({ attempt: i + 1, error: await textOf(page, '#check-error'), locked: await page.isVisible('#check-locked').catch(() => false), at: pathOf(page) });
  }
  console.log(`(lockout attempts: ${JSON.stringify(seen)})`);
  const last = seen[seen.length - 1] || {};
  r.check(seen.length === WRONG_DATES.length && seen.slice(0, -1).every((s) => s.error && !s.locked && s.at !== '/visit'),
    'lockout: each of the first four wrong birth dates shows #check-error', short(seen));
  r.check(last.locked === true, 'lockout: the fifth wrong birth date shows #check-locked', short(last));
  // The right answer no longer helps, on this page or on the link opened again.
  if (await page.locator('input#dob').count() === 1 && await page.isVisible('input#dob')) {
    await answerCheck(page, PATIENT.birthDate);
    r.check(pathOf(page) !== '/visit', 'lockout: the right birth date is refused after the lock', page.url());
  }
  await page.goto(link);
  const locked = await page.isVisible('#check-locked').catch(() => false);
  const form = await page.locator('input#dob').isVisible().catch(() => false);
  if (form && !locked) {
    await answerCheck(page, PATIENT.birthDate);
    r.check(pathOf(page) !== '/visit', 'lockout: opened again, the locked invite refuses the right birth date', page.url());
  } else {
    r.check(locked, 'lockout: opened again, the link shows #check-locked', `${page.url()} ${await textOf(page, 'main')}`);
  }
  phase.expect = [];
}

// ---- the run ----

async function run(cfg, r, open) {
  const t = new Timer();
  const problems = [];
  if (!r.check(cfg.appts.length >= 2, 'the harness booked two appointments (VIGIL_CONSULT_APPTS)', cfg.appts.join(','))) return;
  if (!await preflight(cfg, r, open, t)) {
    r.fail('the relay does not carry a call on its own: the network namespace, coturn or Chromium is broken (see above); the Vigil part would only fail the same way');
    return;
  }

  // The clinician, and the administrator who reads the outbox.
  const drCtx = await open(DESKTOP);
  const drPhase = { name: 'clinician', expect: [] };
  const room = drCtx.pages()[0] || (await drCtx.newPage());
  room.on('dialog', (d) => d.accept().catch(() => {}));
  await watch(drCtx, room, 'clinician', problems, drPhase);
  const where = await passwordStep(room, cfg.base, cfg.dr);
  if (!r.check(where === '/signin/enrol', `${cfg.dr.username} (physician) is sent to enrol a second factor`, `${room.url()} ${short(await errorsOn(room))}`)) return;
  await enrolTotp(room, r, cfg.dr.username);
  t.lap('clinician sign-in and TOTP enrolment');

  const adminCtx = await open();
  const admin = adminCtx.pages()[0] || (await adminCtx.newPage());
  await watch(adminCtx, admin, 'administrator', problems, { name: 'outbox', expect: [] });
  const adminAt = await passwordStep(admin, cfg.base, cfg.admin);
  if (!r.check(adminAt === '/signin/enrol', 'the administrator is sent to enrol a second factor', `${admin.url()} ${short(await errorsOn(admin))}`)) return;
  await enrolTotp(admin, r, cfg.admin.username);
  t.lap('administrator sign-in and TOTP enrolment');

  // 1. The first room: invite, preview bot, check-in, admission, the call.
  const [appt1, appt2] = cfg.appts;
  const room1 = await openRoom(cfg, r, room, appt1);
  if (!room1) return;
  const roomUrl1 = `${cfg.base}/consult/room/${encodeURIComponent(room1)}`;
  if (pathOf(room) !== new URL(roomUrl1).pathname) await room.goto(roomUrl1);
  t.lap('room opened');
  const seen = new Set();
  if (!await sendInvite(r, room, { method: 'dob', channel: 'sms', to: PATIENT.phone }, 'invite')) return;
  const link1 = await inviteLink(cfg, r, admin, seen, 'invite');
  if (!link1) return;
  t.lap('invite sent and read from the outbox');

  await previewBot(cfg, r, link1);
  t.lap('preview bots');

  const patCtx = await open(PHONE);
  const patPhase = { name: 'patient', expect: [] };
  const visit = patCtx.pages()[0] || (await patCtx.newPage());
  await watch(patCtx, visit, 'patient', problems, patPhase);
  if (!await checkIn(cfg, r, visit, link1, patPhase)) return;
  r.pass('the link still works after the preview bots fetched it');
  t.lap('patient check-in');

  const admitted = await admit(r, room, 'first room');
  if (admitted === null) return;
  const inState = await visit.waitForSelector('#visit-status[data-state="admitted"]', { timeout: 10000 }).then(() => true).catch(() => false);
  r.check(inState, 'the patient is admitted (#visit-status data-state=admitted)', await visit.getAttribute('#visit-status', 'data-state').catch(() => ''));
  await checkCall(r, [{ label: 'clinician', page: room }, { label: 'patient', page: visit }], admitted, 'direct', 'direct call');
  t.lap('direct call');

  await chat(r, room, visit, t);

  // 4a. The WebSocket refuses a foreign Origin, even with the patient's cookie.
  const cookies = await cookieHeader(patCtx);
  const visitPage = await fetch(`${cfg.base}/visit`, { headers: { Cookie: cookies }, redirect: 'manual' }).catch((e) => ({ status: String(e) }));
  r.check(visitPage.status === 200, "the patient's cookie is valid outside the browser (GET /visit answers 200)", `${visitPage.status}`);
  try {
    const status = await upgrade(cfg, room1, cookies, 'http://evil.example');
    r.check(status === 403, "a WebSocket upgrade from Origin http://evil.example with the patient's cookie gets 403", `${status}`);
  } catch (e) {
    r.fail(`a WebSocket upgrade from a foreign Origin: ${e}`);
  }
  t.lap('foreign Origin refused');

  // The clinician ends the first visit.
  if (r.check(await room.locator('button#end').count() === 1 && await room.locator('button#lock').count() === 1, 'the room page has button#lock and button#end')) {
    await room.click('button#end');
    const ended = await visit.waitForSelector('#visit-status[data-state="ended"]', { timeout: 15000 }).then(() => true).catch(() => false);
    r.check(ended, "ending the room ends the patient's visit (#visit-status data-state=ended)", await visit.getAttribute('#visit-status', 'data-state').catch(() => ''));
  }
  t.lap('first room ended');

  // 3. The second room, relayed.
  const room2 = await openRoom(cfg, r, room, appt2);
  if (!room2) return;
  const roomUrl2 = `${cfg.base}/consult/room/${encodeURIComponent(room2)}?relay=1`;
  await room.goto(roomUrl2);
  if (!await sendInvite(r, room, { method: 'dob', channel: 'email', to: PATIENT.email }, 'relayed room invite')) return;
  const link2 = await inviteLink(cfg, r, admin, seen, 'relayed room invite');
  if (!link2) return;
  // Sending the invite may have reloaded the room page without ?relay=1.
  if (new URL(room.url()).search !== '?relay=1') await room.goto(roomUrl2);
  const pat2Ctx = await open(PHONE);
  const pat2Phase = { name: 'patient (relayed)', expect: [] };
  const visit2 = pat2Ctx.pages()[0] || (await pat2Ctx.newPage());
  await watch(pat2Ctx, visit2, 'patient (relayed)', problems, pat2Phase);
  if (!await checkIn(cfg, r, visit2, link2, pat2Phase, { wrongFirst: false, relay: true })) return;
  t.lap('relayed room: invite and check-in');
  const admitted2 = await admit(r, room, 'relayed room');
  if (admitted2 === null) return;
  await visit2.waitForSelector('#visit-status[data-state="admitted"]', { timeout: 10000 }).catch(() => {});
  await checkCall(r, [{ label: 'clinician', page: room }, { label: 'patient', page: visit2 }], admitted2, 'relayed', 'relayed call');
  t.lap('relayed call');

  // The minted credentials, and an expired one.
  const minted = await visit2.evaluate(() => (window.vigilCall ? window.vigilCall.iceServers : null)).catch(() => null);
  console.log(`(minted iceServers: ${JSON.stringify(minted, (k, v) => (k === 'credential' ? '…' : v))})`);
  const turnEntry = (minted || []).find((s) => [].concat(s.urls).some((u) => /^turns?:/.test(u)) && s.username);
  if (r.check(turnEntry !== undefined, 'window.vigilCall.iceServers has a TURN entry with a username and credential', short(minted))) {
    const [expiry, id] = [turnEntry.username.split(':')[0], turnEntry.username.slice(turnEntry.username.indexOf(':') + 1)];
    const left = Number(expiry) - Date.now() / 1000;
    r.check(/^\d+$/.test(expiry) && left > 0 && left <= 660 && id.length > 0, 'the TURN username is <expiry>:<id>, expiring within the configured 600 s', `${turnEntry.username} (${Math.round(left)} s left)`);
    r.check(turnCredential(cfg.turn.secret, expiry, id).credential === turnEntry.credential, "the credential is base64(HMAC-SHA1(coturn's secret, username))");
    const urls = [].concat(turnEntry.urls).filter((u) => /^turns?:/.test(u));
    const stale = turnCredential(cfg.turn.secret, Math.floor(Date.now() / 1000) - 60, id);
    const expired = await gatherRelay(visit2, [{ urls, ...stale }]);
    console.log(`(expired credential: ${JSON.stringify(expired)})`);
    r.check(!expired.candidates.some((c) => / typ relay/.test(c)), 'an expired TURN credential gathers no relay candidate', short(expired.candidates));
    if (expired.errors.length) {
      r.check(expired.errors.some((e) => e.code === 401), 'Chromium reports the refusal as icecandidateerror 401', short(expired.errors));
    } else {
      console.log('(Chromium reported no icecandidateerror for the expired credential)');
    }
    const fresh = await gatherRelay(visit2, minted);
    console.log(`(minted credential: ${JSON.stringify(fresh.candidates)})`);
    r.check(fresh.candidates.some((c) => / typ relay/.test(c)), 'the minted credential gathers a typ relay candidate', short(fresh));
  }
  t.lap('TURN credentials');

  // 4b. A separate invite locks after five wrong birth dates.
  if (await sendInvite(r, room, { method: 'dob', channel: 'sms', to: PATIENT.phone }, 'lockout invite')) {
    const link3 = await inviteLink(cfg, r, admin, seen, 'lockout invite');
    if (link3) {
      const lockCtx = await open(PHONE);
      const lockPhase = { name: 'lockout', expect: [] };
      const lockPage = lockCtx.pages()[0] || (await lockCtx.newPage());
      await watch(lockCtx, lockPage, 'lockout', problems, lockPhase);
      await lockout(cfg, r, lockPage, link3, lockPhase);
    }
  }
  t.lap('lockout');

  await room.click('button#end');
  r.check(await visit2.waitForSelector('#visit-status[data-state="ended"]', { timeout: 15000 }).then(() => true).catch(() => false),
    'the relayed visit ends (#visit-status data-state=ended)');
  t.lap('relayed room ended');

  r.check(problems.length === 0, 'no console errors, CSP violations, uncaught exceptions or failed requests', problems.join('\n'));
}

main().catch((e) => { console.log(`FAIL consult browser: ${e && e.stack ? e.stack : e}`); process.exitCode = 1; });
