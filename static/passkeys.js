// Passkeys (WebAuthn) in the browser: a form marked data-passkey="create" or "get" asks its
// data-passkey-options URL for a challenge, lets the authenticator answer, puts the answer
// (JSON, binary as base64url) in its hidden "credential" field and is submitted again, by
// htmx like any form. Bound from here, never inline (CSP).
(function () {
  "use strict";

  var SUPPORTED = !!(window.PublicKeyCredential && navigator.credentials);

  function toBytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    return Uint8Array.from(binary, function (c) { return c.charCodeAt(0); });
  }

  function toText(buffer) {
    var binary = String.fromCharCode.apply(null, new Uint8Array(buffer));
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (d) { return Object.assign({}, d, { id: toBytes(d.id) }); });
  }

  // The server's options (py_webauthn's JSON) as the browser API wants them: bytes, not text.
  function publicKey(options) {
    var key = Object.assign({}, options, { challenge: toBytes(options.challenge) });
    if (options.user) key.user = Object.assign({}, options.user, { id: toBytes(options.user.id) });
    if (options.excludeCredentials) key.excludeCredentials = descriptors(options.excludeCredentials);
    if (options.allowCredentials) key.allowCredentials = descriptors(options.allowCredentials);
    return key;
  }

  function answer(credential) {
    var r = credential.response;
    var response = { clientDataJSON: toText(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toText(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toText(r.authenticatorData);
      response.signature = toText(r.signature);
      if (r.userHandle) response.userHandle = toText(r.userHandle);
    }
    return JSON.stringify({
      id: credential.id, rawId: toText(credential.rawId), type: credential.type, response: response,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults()
    });
  }

  function say(form, message, field) {
    var slot = form.querySelector("[data-passkey-error]");
    if (slot) slot.textContent = message;
    var input = field && form.querySelector("[name='" + field + "']");
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }

  var REFUSED = {
    NotAllowedError: "The passkey request was cancelled or timed out.",
    InvalidStateError: "This device already holds a passkey for your account.",
    SecurityError: "This page's address cannot use passkeys."
  };

  async function options(form) {
    var response = await fetch(form.getAttribute("data-passkey-options"), {
      method: "POST", body: new FormData(form), credentials: "same-origin",
      headers: { "X-CSRF-Token": form.elements.csrf_token.value, "Accept": "application/json" }
    });
    var body = (response.headers.get("Content-Type") || "").indexOf("application/json") === 0 ? await response.json() : null;
    if (!response.ok) {
      var problem = new Error(body && body.error || "Something went wrong. Reload the page and try again.");
      problem.field = body && body.field;
      throw problem;
    }
    return body;
  }

  async function ceremony(form) {
    var button = form.querySelector("[type=submit]");
    button.disabled = true;
    say(form, "");
    try {
      var key = publicKey(await options(form));
      var credential = form.getAttribute("data-passkey") === "create"
        ? await navigator.credentials.create({ publicKey: key })
        : await navigator.credentials.get({ publicKey: key });
      form.elements.credential.value = answer(credential);
      button.disabled = false;
      form.requestSubmit(button);
    } catch (error) {
      button.disabled = false;
      say(form, REFUSED[error.name] || error.message, error.field);
      if (!error.field) button.focus();
    }
  }

  // Before htmx sees it (capture): a passkey form without its answer runs the ceremony first.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute("data-passkey") || form.elements.credential.value) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (SUPPORTED) ceremony(form);
    else say(form, "This browser cannot use passkeys.");
  }, true);

  function reveal(root) {
    if (!SUPPORTED) return;
    (root || document).querySelectorAll("form[data-passkey][hidden]").forEach(function (form) {
      form.hidden = false;
    });
  }

  reveal();  // app.js adds this script once the page holds a passkey form (data-script)
  document.addEventListener("htmx:load", function (event) { reveal(event.detail.elt.parentNode || document); });
})();
