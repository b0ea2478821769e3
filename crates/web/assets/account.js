// Sign-in and account pages: show-password buttons, the password strength
// meter (the server's policy decides, through POST /password/check), and the
// passkey buttons (window.vigilPasskey from /static/passkey.js).
// Plain ES2020; loaded deferred; no inline script anywhere (CSP).
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const csrfToken = () => {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") || "" : "";
  };

  // Show / hide password buttons: #show-password and any button[data-show-for].
  document.querySelectorAll("button[data-show-for]").forEach((button) => {
    const input = $(button.getAttribute("data-show-for"));
    if (!input) return;
    button.addEventListener("click", () => {
      const show = input.type === "password";
      input.type = show ? "text" : "password";
      button.setAttribute("aria-pressed", show ? "true" : "false");
      button.textContent = show ? "Hide" : "Show";
      button.setAttribute("aria-label", show ? "Hide password" : "Show password");
    });
  });

  // Strength meter for the new password.
  const newPassword = $("new-password");
  const meter = $("strength");
  const feedback = $("password-feedback");
  if (newPassword && meter && feedback) {
    const form = newPassword.form;
    const usernameOf = () => {
      const u = $("username");
      if (u && u.value) return u.value;
      return form && form.dataset.username ? form.dataset.username : "";
    };
    const role = form && form.dataset.role ? form.dataset.role : "";
    let timer = null;
    let seq = 0;
    const check = async () => {
      const password = newPassword.value;
      const mine = ++seq;
      if (password === "") {
        meter.value = 0;
        feedback.textContent = "";
        return;
      }
      try {
        const reply = await fetch("/password/check", {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ password, username: usernameOf(), role }),
        });
        const r = await reply.json();
        if (mine !== seq) return; // a newer check is under way
        if (!reply.ok) {
          feedback.textContent = r && r.error ? r.error : "Could not check the password.";
          return;
        }
        let score = 1;
        if (r.ok) {
          score = 2;
          if (r.length >= r.min + 4) score = 3;
          if (r.length >= r.min + 8) score = 4;
        } else if (r.length < r.min / 2) {
          score = 0;
        }
        meter.value = score;
        feedback.textContent = r.ok ? "Strong enough" : r.reason;
        newPassword.setAttribute("aria-invalid", r.ok ? "false" : "true");
      } catch (_) {
        if (mine === seq) feedback.textContent = "Could not check the password.";
      }
    };
    newPassword.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(check, 250);
    });
  }

  const status = (msg) => {
    const s = $("passkey-status");
    if (s) s.textContent = msg;
  };
  const passkeys = () => {
    if (!window.vigilPasskey || !window.PublicKeyCredential) {
      status("This browser cannot use passkeys.");
      return null;
    }
    return window.vigilPasskey;
  };

  // Sign in with a passkey (the sign-in page and the second-factor page).
  const signInWith = (button, usernameOf) => {
    if (!button) return;
    button.addEventListener("click", async () => {
      const pk = passkeys();
      if (!pk) return;
      const username = usernameOf();
      if (!username) {
        status("Type your user name first.");
        const u = $("username");
        if (u) u.focus();
        return;
      }
      button.disabled = true;
      status("Waiting for your passkey…");
      try {
        const reply = await pk.signIn("/signin/passkey/start", "/signin/passkey/finish", username, "");
        window.location = reply.redirect;
      } catch (e) {
        status(e.message);
      } finally {
        button.disabled = false;
      }
    });
  };
  signInWith($("passkey-signin"), () => ($("username") ? $("username").value.trim() : ""));
  const factor = $("passkey-factor");
  signInWith(factor, () => (factor ? factor.dataset.username || "" : ""));

  // Register a passkey: during enrolment (then show the recovery codes) or
  // from the account page (then reload the list).
  const register = (button, start, finish, csrf, done) => {
    if (!button) return;
    button.addEventListener("click", async () => {
      const pk = passkeys();
      if (!pk) return;
      const name = $("passkey-name") ? $("passkey-name").value.trim() : "";
      button.disabled = true;
      status("Follow your browser's prompt…");
      try {
        const reply = await pk.register(start, finish, name, csrf);
        done(reply);
      } catch (e) {
        status(e.message);
        button.disabled = false;
      }
    });
  };
  register($("passkey-register"), "/signin/enrol/passkey/start", "/signin/enrol/passkey/finish", "", (reply) => {
    status("Passkey registered.");
    const list = $("recovery-codes");
    const codes = Array.isArray(reply.recovery_codes) ? reply.recovery_codes : [];
    if (list) {
      list.replaceChildren(
        ...codes.map((c) => {
          const li = document.createElement("li");
          const code = document.createElement("code");
          code.textContent = c;
          li.append(code);
          return li;
        }),
      );
    }
    const finish = $("enrol-finish");
    if (finish) {
      finish.hidden = false;
      const p = document.createElement("p");
      p.textContent = codes.length
        ? "Keep these recovery codes somewhere safe; each works once. They are shown only now."
        : "Your existing recovery codes still work.";
      finish.insertBefore(p, list);
      const go = $("enrol-continue");
      if (go) go.focus();
    }
  });
  register($("passkey-add"), "/account/passkeys/start", "/account/passkeys/finish", csrfToken(), () => {
    window.location.reload();
  });
})();
