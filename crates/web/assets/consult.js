'use strict';
// The consultation page, for both sides: the signaling WebSocket, WebRTC
// (peer to peer; the clinician offers to each admitted participant), the
// waiting room, chat, and the call's path (direct or relayed).
// No media passes through Vigil; only signaling and chat do.
(function () {
  const root = document.getElementById('consult');
  if (!root) return;
  const room = root.dataset.room;
  const side = root.dataset.side;
  const relay = root.dataset.relay === '1';
  const $ = (id) => document.getElementById(id);
  const call = {
    pcs: new Map(), pc: null, iceServers: null, ws: null, admittedAt: null,
    firstFrameAt: null, state: 'connecting', path: 'connecting', messages: 0,
  };
  window.vigilCall = call;
  let localStream = null;
  let ended = false;
  let chain = Promise.resolve();
  let failures = 0;
  const waitingPeers = [];
  const pendingCandidates = new Map();

  function setState(state, text) {
    call.state = state;
    const el = $('visit-status');
    if (el) {
      el.dataset.state = state;
      el.textContent = text;
    }
  }

  function showError(text) {
    let el = $('consult-error');
    if (!el) {
      el = document.createElement('p');
      el.id = 'consult-error';
      el.className = 'error';
      el.setAttribute('role', 'alert');
      root.insertBefore(el, root.children[1] || null);
    }
    el.textContent = text;
  }

  function send(msg) {
    if (call.ws && call.ws.readyState === WebSocket.OPEN) call.ws.send(JSON.stringify(msg));
  }

  async function media() {
    if (!localStream) {
      localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      $('local-video').srcObject = localStream;
    }
    return localStream;
  }

  function closePeer(id) {
    const pc = call.pcs.get(id);
    if (pc) pc.close();
    call.pcs.delete(id);
    pendingCandidates.delete(id);
    if (call.pc === pc) call.pc = null;
  }

  async function notePath(pc) {
    const stats = await pc.getStats();
    let pairId = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    let pair = pairId ? stats.get(pairId) : null;
    if (!pair) {
      stats.forEach((s) => {
        if (s.type === 'candidate-pair' && s.state === 'succeeded' && s.nominated) pair = s;
      });
    }
    if (!pair) return false;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    const relayed = (local && local.candidateType === 'relay') || (remote && remote.candidateType === 'relay');
    call.path = relayed ? 'relayed' : 'direct';
    const el = $('call-path');
    el.dataset.path = call.path;
    el.textContent = relayed
      ? 'Relayed through the clinic\u2019s TURN server (still encrypted end to end)'
      : 'Direct connection';
    return true;
  }

  // Right after "connected", getStats may not list the selected pair yet:
  // ask again until it does (for up to ten seconds).
  async function watchPath(pc) {
    const live = () => [...call.pcs.values()].includes(pc);
    for (let i = 0; i < 40 && live(); i += 1) {
      if (await notePath(pc)) return;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async function newPeer(peer) {
    closePeer(peer);
    const pc = new RTCPeerConnection({
      iceServers: call.iceServers || [],
      iceTransportPolicy: relay ? 'relay' : 'all',
    });
    call.pcs.set(peer, pc);
    call.pc = pc;
    pc.onicecandidate = (e) => {
      if (e.candidate) {
        send({
          type: 'ice-candidate', to: peer, candidate: e.candidate.candidate,
          sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex,
        });
      }
    };
    pc.ontrack = (e) => {
      const v = $('remote-video');
      if (v.srcObject !== e.streams[0]) v.srcObject = e.streams[0];
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'connected') watchPath(pc).catch(() => {});
      if (pc.connectionState === 'failed') showError('The call could not connect. Check your network and reload.');
    };
    const stream = await media();
    for (const t of stream.getTracks()) pc.addTrack(t, stream);
    return pc;
  }

  async function offerTo(peer) {
    const pc = await newPeer(peer);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    send({ type: 'offer', to: peer, sdp: offer.sdp });
  }

  async function flushCandidates(peer, pc) {
    for (const c of pendingCandidates.get(peer) || []) await pc.addIceCandidate(c);
    pendingCandidates.delete(peer);
  }

  function chatLine(from, text) {
    const li = document.createElement('li');
    li.className = 'chat-msg';
    li.dataset.from = from === 'clinician' ? 'clinician' : 'patient';
    const who = document.createElement('strong');
    who.textContent = from === 'clinician' ? 'Clinician' : from === 'patient' ? 'Patient' : 'Companion';
    li.append(who, ': ', text);
    $('chat-log').append(li);
  }

  const KIND_TEXT = {
    'other-patient-phone': 'a phone number of another patient',
    'other-patient-email': 'an e-mail address of another patient',
    'other-patient-mrn': 'a medical record number of another patient',
    'other-patient-ssn': 'a Social Security number of another patient',
    'other-patient-name-birth-date': 'the name and birth date of another patient',
  };

  function renderRoster(msg) {
    const waiting = $('waiting');
    const admitted = $('admitted');
    if (!waiting || !admitted) return;
    waiting.replaceChildren();
    admitted.replaceChildren();
    for (const p of msg.participants) {
      if (p.role === 'clinician') continue;
      const li = document.createElement('li');
      li.dataset.participant = p.id;
      li.dataset.status = p.status;
      li.textContent = `${p.role}${p.connected ? '' : ' (disconnected)'} `;
      if (p.status === 'waiting') {
        const admit = document.createElement('button');
        admit.type = 'button';
        admit.className = 'admit';
        admit.textContent = 'Admit';
        admit.onclick = () => { call.admitClickedAt = performance.now(); send({ type: 'admit', participant: p.id }); };
        const deny = document.createElement('button');
        deny.type = 'button';
        deny.className = 'deny secondary';
        deny.textContent = 'Deny';
        deny.onclick = () => send({ type: 'deny', participant: p.id });
        li.append(admit, ' ', deny);
        waiting.append(li);
      } else if (p.status === 'admitted') {
        const remove = document.createElement('button');
        remove.type = 'button';
        remove.className = 'deny secondary';
        remove.textContent = 'Remove';
        remove.onclick = () => send({ type: 'deny', participant: p.id });
        li.append(remove);
        admitted.append(li);
      }
    }
    const lock = $('lock');
    if (lock) {
      lock.dataset.locked = msg.locked ? '1' : '0';
      lock.textContent = msg.locked ? 'Unlock the room' : 'Lock the room';
    }
  }

  async function handle(msg) {
    call.messages += 1;
    switch (msg.type) {
      case 'waiting':
        setState('waiting', 'You are in the waiting room. Your clinician will let you in.');
        break;
      case 'admitted':
        call.admittedAt = performance.now();
        if (side === 'patient') setState('admitted', 'You are in the visit.');
        await media();
        break;
      case 'denied':
        setState('denied', 'The clinician did not let you in to this visit.');
        ended = true;
        for (const id of [...call.pcs.keys()]) closePeer(id);
        break;
      case 'ended':
        setState('ended', 'The visit has ended. You can close this page.');
        ended = true;
        for (const id of [...call.pcs.keys()]) closePeer(id);
        if ($('room-status')) $('room-status').textContent = 'ended';
        break;
      case 'ice-servers':
        call.iceServers = msg.ice_servers;
        while (waitingPeers.length) await offerTo(waitingPeers.shift());
        break;
      case 'peer-joined':
        if (side === 'clinician') {
          if (call.iceServers) await offerTo(msg.participant);
          else waitingPeers.push(msg.participant);
        }
        break;
      case 'peer-left':
        closePeer(msg.participant);
        break;
      case 'offer': {
        const pc = await newPeer(msg.from);
        await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
        await flushCandidates(msg.from, pc);
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        send({ type: 'answer', to: msg.from, sdp: answer.sdp });
        break;
      }
      case 'answer': {
        const pc = call.pcs.get(msg.from);
        if (pc) {
          await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
          await flushCandidates(msg.from, pc);
        }
        break;
      }
      case 'ice-candidate': {
        const c = { candidate: msg.candidate, sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex };
        const pc = call.pcs.get(msg.from);
        if (pc && pc.remoteDescription) await pc.addIceCandidate(c);
        else {
          const list = pendingCandidates.get(msg.from) || [];
          list.push(c);
          pendingCandidates.set(msg.from, list);
        }
        break;
      }
      case 'chat':
        chatLine(msg.from, msg.text);
        break;
      case 'file-offer': {
        const li = document.createElement('li');
        li.className = 'chat-msg file-msg';
        li.dataset.from = msg.from === 'clinician' ? 'clinician' : 'patient';
        const a = document.createElement('a');
        a.className = 'file-link';
        a.href = side === 'clinician'
          ? `/consult/room/${encodeURIComponent(room)}/files/${encodeURIComponent(msg.id)}`
          : `/visit/files/${encodeURIComponent(msg.id)}`;
        a.textContent = `${msg.name} (${Math.ceil(msg.size / 1024)} KB)`;
        li.append('File: ', a);
        $('chat-log').append(li);
        break;
      }
      case 'chat-sent':
        chatLine(side === 'clinician' ? 'clinician' : 'patient', msg.text);
        $('chat-text').value = '';
        $('dlp-block').hidden = true;
        break;
      case 'chat-blocked': {
        const what = (msg.kinds || []).map((k) => KIND_TEXT[k] || k).join(', ');
        $('dlp-text').textContent = `Not sent: the message holds ${what || 'another patient\u2019s identifier'}. `
          + 'Check that you are in the right patient\u2019s visit.';
        const lesson = $('dlp-block').querySelector('a.dlp-lesson');
        if (lesson) lesson.href = `/learn/${encodeURIComponent(msg.lesson)}`;
        $('dlp-block').hidden = false;
        break;
      }
      case 'roster':
        renderRoster(msg);
        break;
      case 'error':
        showError(`The server refused that (${msg.code}).`);
        break;
      case 'pong':
        break;
      default:
        break;
    }
  }

  function connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/consult/ws?room=${encodeURIComponent(room)}`);
    call.ws = ws;
    // Attached before any await: the first message must not be lost.
    ws.onopen = () => { failures = 0; };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      chain = chain.then(() => handle(msg)).catch((e) => showError(`Call error: ${e.message}`));
    };
    ws.onclose = () => {
      if (ended) return;
      failures += 1;
      // A room that has ended, or a pass no longer valid, refuses every try.
      if (failures > 15) {
        setState('unavailable', 'This visit is not available. Open the link from your invitation again.');
        showError('Could not connect to the visit.');
        return;
      }
      if (side === 'patient' && call.state !== 'denied') setState('reconnecting', 'Reconnecting…');
      setTimeout(connect, Math.min(2000 * failures, 10000));
    };
  }

  $('chat-send').onclick = () => {
    const text = $('chat-text').value.trim();
    if (text) send({ type: 'chat', text });
  };
  async function shareFile(reason) {
    const input = $('file-input');
    const file = input && input.files && input.files[0];
    if (!file) return;
    const base = side === 'clinician' ? `/consult/room/${encodeURIComponent(room)}/files` : '/visit/files';
    let url = `${base}?name=${encodeURIComponent(file.name)}`;
    if (reason) url += `&reason=${encodeURIComponent(reason)}`;
    const headers = { 'content-type': file.type || 'application/octet-stream' };
    const meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) headers['x-csrf-token'] = meta.content;
    const r = await fetch(url, { method: 'POST', headers, body: file, credentials: 'same-origin' });
    const body = await r.json().catch(() => ({}));
    if (r.status === 403 && body.blocked) {
      pendingFile = true;
      handle({ type: 'chat-blocked', lesson: 'dlp-other-patient', kinds: body.blocked });
    } else if (!r.ok) {
      showError(body.error || `The file was not shared (${r.status}).`);
    } else {
      pendingFile = false;
      input.value = '';
      $('dlp-block').hidden = true;
    }
  }
  let pendingFile = false;
  if ($('file-send')) $('file-send').onclick = () => { shareFile(null).catch((e) => showError(e.message)); };
  if ($('dlp-override')) {
    $('dlp-override').onclick = () => {
      const text = $('chat-text').value.trim();
      const reason = $('dlp-reason').value.trim();
      if (!reason) { $('dlp-reason').focus(); return; }
      if (pendingFile) { shareFile(reason).catch((e) => showError(e.message)); return; }
      if (text) send({ type: 'chat', text, override_reason: reason });
    };
  }
  if ($('lock')) $('lock').onclick = () => send({ type: $('lock').dataset.locked === '1' ? 'unlock' : 'lock' });
  if ($('end')) $('end').onclick = () => send({ type: 'end' });
  if ($('leave')) {
    $('leave').onclick = () => {
      ended = true;
      send({ type: 'leave' });
      setState('left', 'You left the visit.');
      for (const id of [...call.pcs.keys()]) closePeer(id);
    };
  }
  connect();
}());
