// The treasury console's only script (served from 'self'; the CSP allows nothing inline).
// WebAuthn ceremonies: the server makes the options, the authenticator signs, the server
// (and, for approvals, every signer node) verifies. See docs/CONSOLE.md.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById("status");

  function say(text, bad) {
    status.textContent = text;
    status.className = bad ? "flag" : "ok";
  }

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    const doc = await r.json();
    if (!r.ok) {
      // an RFC 9457 problem document: urn:tpwc:problem:<slug>, title, status, detail
      const slug = String(doc.type || r.status).replace("urn:tpwc:problem:", "");
      throw new Error(slug + ": " + (doc.detail || doc.title || ""));
    }
    return doc;
  }

  async function assertion(options) {
    const cred = await navigator.credentials.get({
      publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options),
    });
    return cred.toJSON();
  }

  // htmx requests (the dry-run form) carry the CSRF token too
  document.body.addEventListener("htmx:configRequest", (ev) => {
    ev.detail.headers["X-CSRF-Token"] = csrf;
  });

  const login = document.getElementById("passkey-login");
  if (login) {
    login.addEventListener("click", async () => {
      try {
        say("Waiting for your passkey…");
        const options = await post("/console/login/options");
        const res = await post("/console/login/verify", await assertion(options));
        window.location.assign(res.next);
      } catch (e) {
        say("Sign-in failed: " + e.message, true);
      }
    });
  }

  const form = document.getElementById("register-form");
  if (form) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        say("Creating a passkey…");
        const options = await post("/console/register/options", {
          token: document.getElementById("token").value,
        });
        const cred = await navigator.credentials.create({
          publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options),
        });
        const res = await post("/console/register/verify", cred.toJSON());
        document.getElementById("policy-entry").textContent = JSON.stringify(
          res.policy_entry, null, 2
        );
        document.getElementById("registered").hidden = false;
        say("Registered as " + res.approver_id + ": pending governance.");
      } catch (e) {
        say("Registration failed: " + e.message, true);
      }
    });
  }

  for (const button of document.querySelectorAll("button[data-decision]")) {
    button.addEventListener("click", async () => {
      const id = button.dataset.request;
      const decision = button.dataset.decision;
      try {
        say("Confirm with your passkey to " + decision + " " + id + "…");
        const options = await post("/console/requests/" + id + "/challenge", { decision });
        const credential = await assertion(options);
        const res = await post("/console/requests/" + id + "/decide", { decision, credential });
        say(decision + "d: request " + id + " is now " + res.status + ".");
        const s = document.getElementById("req-status");
        if (s) s.textContent = res.status;
        for (const b of document.querySelectorAll("button[data-decision]")) b.disabled = true;
      } catch (e) {
        say("Refused: " + e.message, true);
      }
    });
  }

  const logout = document.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", async () => {
      const res = await post("/console/logout");
      window.location.assign(res.next);
    });
  }
})();
