// Passkey ceremonies for Vigil: the browser half of webauthn-rs's options and responses.
// Plain ES2020, no framework. Served at /static/passkey.js; exposes window.vigilPasskey.
(() => {
  "use strict";

  const toBuffer = (b64url) => {
    const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const bin = atob(padded);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  };

  const toB64url = (buffer) => {
    if (buffer === null || buffer === undefined) return null;
    const bytes = new Uint8Array(buffer);
    let bin = "";
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };

  const post = async (url, body, csrf) => {
    const reply = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    let json = null;
    try {
      json = await reply.json();
    } catch (_) {
      json = null;
    }
    if (!reply.ok) {
      const message = json && typeof json.error === "string" ? json.error : `request failed (${reply.status})`;
      throw new Error(message);
    }
    if (json === null) throw new Error("the server sent no JSON");
    return json;
  };

  const convertDescriptors = (list) =>
    Array.isArray(list) ? list.map((d) => ({ ...d, id: toBuffer(d.id) })) : list;

  const creationOptions = (options) => {
    const pk = { ...options.publicKey };
    pk.challenge = toBuffer(pk.challenge);
    pk.user = { ...pk.user, id: toBuffer(pk.user.id) };
    pk.excludeCredentials = convertDescriptors(pk.excludeCredentials);
    return { publicKey: pk };
  };

  const requestOptions = (options) => {
    const pk = { ...options.publicKey };
    pk.challenge = toBuffer(pk.challenge);
    pk.allowCredentials = convertDescriptors(pk.allowCredentials);
    return { publicKey: pk };
  };

  // Browser failures (cancelled, timed out, not allowed) arrive as DOMExceptions.
  const ceremony = async (promise) => {
    try {
      const credential = await promise;
      if (!credential) throw new Error("no credential was returned");
      return credential;
    } catch (e) {
      throw new Error(e && e.message ? e.message : String(e));
    }
  };

  const register = async (startUrl, finishUrl, name, csrf) => {
    const start = await post(startUrl, {}, csrf);
    const cred = await ceremony(navigator.credentials.create(creationOptions(start.options)));
    const credential = {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: toB64url(cred.response.attestationObject),
        clientDataJSON: toB64url(cred.response.clientDataJSON),
      },
      extensions: {},
    };
    return post(finishUrl, { challenge_id: start.challenge_id, name, credential }, csrf);
  };

  const signIn = async (startUrl, finishUrl, username, csrf) => {
    const start = await post(startUrl, { username }, csrf);
    const cred = await ceremony(navigator.credentials.get(requestOptions(start.options)));
    const credential = {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: toB64url(cred.response.authenticatorData),
        clientDataJSON: toB64url(cred.response.clientDataJSON),
        signature: toB64url(cred.response.signature),
        userHandle: toB64url(cred.response.userHandle),
      },
      extensions: {},
    };
    return post(finishUrl, { challenge_id: start.challenge_id, credential }, csrf);
  };

  window.vigilPasskey = Object.freeze({ register, signIn });
})();
