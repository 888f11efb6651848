// Passkeys on forwardauth's pages (served by forwardauth: CSP script-src 'self', no inline code).
//
// Each element with data-passkey="login" | "second-factor" | "register" is hidden until this
// script finds WebAuthn in the browser; without JavaScript the pages work with their forms alone.
// data-options and data-verify are the two JSON endpoints of the ceremony (see http/passkeys.py).
// The texts shown are the page's own, in its language: the data-* attributes of the widget's
// data-passkey-error element (templates/passkey_error.html).
(() => {
  "use strict";

  const decode = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)).buffer;
  };
  const encode = (buffer) => {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  const descriptors = (list) => (list || []).map((item) => ({ ...item, id: decode(item.id) }));

  // The server's JSON options as the browser API takes them (binary fields as ArrayBuffers).
  const creationOptions = (o) => ({
    ...o,
    challenge: decode(o.challenge),
    user: { ...o.user, id: decode(o.user.id) },
    excludeCredentials: descriptors(o.excludeCredentials),
  });
  const requestOptions = (o) => ({ ...o, challenge: decode(o.challenge), allowCredentials: descriptors(o.allowCredentials) });

  // A PublicKeyCredential as JSON (what py_webauthn parses).
  const credentialJSON = (credential) => {
    const r = credential.response;
    const response = { clientDataJSON: encode(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = encode(r.attestationObject);
      response.transports = typeof r.getTransports === "function" ? r.getTransports() : [];
    } else {
      response.authenticatorData = encode(r.authenticatorData);
      response.signature = encode(r.signature);
      response.userHandle = r.userHandle ? encode(r.userHandle) : null;
    }
    return {
      id: credential.id,
      rawId: encode(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
      response,
    };
  };

  const post = async (url, body) => {
    const answer = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    const data = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      if (data.redirect) window.location.assign(data.redirect);
      // the server's own (translated) description, else its status in the page's words
      throw Object.assign(new Error(data.error_description || ""), { status: answer.status });
    }
    return data;
  };

  // What went wrong, in the page's language (texts: the error element's dataset).
  const explain = (failure, texts) => {
    const name = failure && failure.name;
    if (name === "NotAllowedError") return texts.cancelled;
    if (name === "InvalidStateError") return texts.registered;
    if (name === "SecurityError") return texts.insecure;
    if (failure && failure.message) return failure.message;
    if (failure && failure.status) return texts.status.replace("{status}", String(failure.status));
    return texts.failed;
  };

  // The recovery codes of a first factor, shown once in the page's data-passkey-codes section.
  const showCodes = (widget, codes, next) => {
    const section = document.querySelector("[data-passkey-codes]");
    if (!section || !codes || !codes.length) return false;
    const list = section.querySelector("ol");
    list.replaceChildren(
      ...codes.map((code) => {
        const item = document.createElement("li");
        const text = document.createElement("code");
        text.textContent = code;
        item.append(text);
        return item;
      }),
    );
    section.querySelector("a").href = next;
    widget.hidden = true;
    section.hidden = false;
    section.querySelector("h2").focus();
    return true;
  };

  const ceremony = async (widget, form) => {
    const kind = widget.dataset.passkey;
    const options = await post(widget.dataset.options, {});
    if (kind === "register") {
      const credential = await navigator.credentials.create({ publicKey: creationOptions(options.publicKey) });
      const name = form.elements.namedItem("name").value;
      return post(widget.dataset.verify, { credential: credentialJSON(credential), name });
    }
    const credential = await navigator.credentials.get({ publicKey: requestOptions(options.publicKey) });
    return post(widget.dataset.verify, { credential: credentialJSON(credential), rd: widget.dataset.rd || "" });
  };

  const start = (widget) => {
    const error = widget.querySelector("[data-passkey-error]");
    const form = widget.tagName === "FORM" ? widget : null;
    const button = widget.querySelector("button");
    const run = async (event) => {
      if (event) event.preventDefault();
      error.hidden = true;
      button.disabled = true;
      try {
        const done = await ceremony(widget, form);
        if (!showCodes(widget, done.recovery_codes, done.redirect)) window.location.assign(done.redirect);
      } catch (failure) {
        error.textContent = explain(failure, error.dataset);
        error.hidden = false;
      } finally {
        button.disabled = false;
      }
    };
    if (form) form.addEventListener("submit", run);
    else button.addEventListener("click", () => run(null));
    widget.hidden = false;
  };

  if (window.PublicKeyCredential && navigator.credentials) {
    document.querySelectorAll("[data-passkey]").forEach(start);
  }
})();
