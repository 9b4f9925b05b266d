// Gatehouse's page behaviour: toasts and focus after swaps. Bound from here, never inline (CSP).
(function () {
  "use strict";

  var TOAST_MS = 6000;
  var UNDO_MS = 15000;  // long enough to notice, read and reach the Undo button

  function region() { return document.getElementById("toasts"); }

  function dismissLater(el, ms) {
    window.setTimeout(function () { el.remove(); }, ms);
  }

  function addCloseButton(el) {
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss message");
    close.textContent = "×";
    close.addEventListener("click", function () { el.remove(); });
    el.appendChild(close);
  }

  // The server's own toast markup (partials/toast.html), filled in: the Undo form posts with
  // htmx, its CSRF token the one the server put in the template.
  function showToast(item) {
    var el = document.getElementById("toast-template").content.firstElementChild.cloneNode(true);
    el.className = "toast toast-" + (item.level || "success");
    el.querySelector(".toast-text").textContent = item.text;
    var form = el.querySelector("form");
    if (item.undo) {
      form.action = item.undo;
      form.setAttribute("hx-post", item.undo);
      form.setAttribute("hx-swap", "none");
      form.addEventListener("htmx:afterRequest", function () { el.remove(); });
    } else {
      form.remove();
      el.removeAttribute("data-ms");
    }
    region().appendChild(el);
    adoptServerToasts(region());
    if (item.undo) htmx.process(el);
  }

  function adoptServerToasts(root) {
    (root || document).querySelectorAll(".toast:not([data-bound])").forEach(function (el) {
      el.setAttribute("data-bound", "");
      addCloseButton(el);
      dismissLater(el, el.hasAttribute("data-ms") ? UNDO_MS : TOAST_MS);
    });
  }

  // Times arrive in UTC (exact value in the title); show them in the viewer's own zone
  // (those given as an age, "2 hours ago", stay so).
  function localTimes(root) {
    (root || document).querySelectorAll("time[datetime]:not([data-local]):not([data-ago])").forEach(function (el) {
      var when = new Date(el.dateTime);
      if (isNaN(when)) return;
      el.setAttribute("data-local", "");
      el.textContent = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    });
  }

  document.addEventListener("toast", function (event) {
    (event.detail.items || []).forEach(showToast);
  });

  // After a navigation swapped the whole page the old focus is gone: land on the new content.
  document.addEventListener("htmx:afterSettle", function (event) {
    adoptServerToasts();
    localTimes();
    if (event.detail.target === document.body && !document.activeElement.matches("[autofocus]")) {
      var target = document.querySelector("[autofocus]") || document.getElementById("main");
      if (target) target.focus();
    }
  });

  // A form on its way speaks for its fields: a field's own check still due from the last keys
  // (hx-trigger "input changed delay:…") stays home. Sent after the answer, it would carry this
  // page's CSRF token, which a login has ended by then, and its refusal would rewrite the
  // session cookie without the next page's token, so that page's next form would be refused.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    var form = elt.closest("form");
    if (form === elt) form.setAttribute("data-sent", "");
    else if (form && form.hasAttribute("data-sent") && elt.matches("input, select, textarea")) event.preventDefault();
  });

  // Answered without leaving the page (errors shown, or no answer at all): fields check again.
  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    if (!xhr.getResponseHeader("HX-Location") && !xhr.getResponseHeader("HX-Redirect")) {
      event.detail.elt.removeAttribute("data-sent");
    }
  });

  // Back/forward to a page the server no longer shows this way (the session ended, say):
  // load it for real, so that the server can send the browser where it belongs.
  document.addEventListener("htmx:historyCacheMissLoadError", function () {
    window.location.reload();
  });

  // The account's preferences live on <html> (base.html), which htmx never swaps: a saved
  // preferences form sends them as an event, and a whole page loaded by htmx (a login or a
  // logout changes whose they are) brings its own <html> tag to copy them from.
  function applyPreferences(theme, singleKeyShortcuts) {
    var root = document.documentElement;
    if (theme === "light" || theme === "dark") root.setAttribute("data-theme", theme);
    else root.removeAttribute("data-theme");
    if (singleKeyShortcuts) root.removeAttribute("data-single-key-shortcuts");
    else root.setAttribute("data-single-key-shortcuts", "off");
  }
  document.addEventListener("preferences", function (event) {
    applyPreferences(event.detail.theme, event.detail.singleKeyShortcuts);
  });
  document.addEventListener("htmx:beforeSwap", function (event) {
    var text = event.detail.serverResponse || "";
    if (!/^\s*<!doctype html>/i.test(text)) return;
    var tag = /<html\b[^>]*>/i.exec(text);
    if (!tag) return;
    var html = new DOMParser().parseFromString(tag[0] + "</html>", "text/html").documentElement;
    applyPreferences(html.getAttribute("data-theme"), html.getAttribute("data-single-key-shortcuts") !== "off");
  });

  // Busy: while a request is out, the element it will replace says so (aria-busy; htmx marks
  // the asker itself with htmx-request), and the form it came from takes no second submit: its
  // buttons are aria-disabled rather than disabled, so a focused button keeps the focus.
  // (data-sent, set above while the form is out, is what refuses the second submit.)
  function submitButtons(form) {
    var own = Array.prototype.slice.call(form.querySelectorAll("button:not([type]), [type=submit]"));
    return form.id ? own.concat(Array.prototype.slice.call(document.querySelectorAll('[type=submit][form="' + form.id + '"]'))) : own;
  }
  function setBusy(detail, on) {
    // Only a form's own submission: a field checking itself (hx-post on an input) leaves the
    // form free to be sent.
    var form = detail.elt.matches("form") ? detail.elt : null;
    [detail.target, form].forEach(function (el) {
      if (el && on) el.setAttribute("aria-busy", "true");
      else if (el) el.removeAttribute("aria-busy");
    });
    if (!form) return;
    submitButtons(form).forEach(function (button) {
      if (on) button.setAttribute("aria-disabled", "true");
      else button.removeAttribute("aria-disabled");
    });
  }
  document.addEventListener("htmx:beforeSend", function (event) { setBusy(event.detail, true); });
  document.addEventListener("htmx:afterRequest", function (event) { setBusy(event.detail, false); });
  document.addEventListener("submit", function (event) {
    if (event.target.hasAttribute("data-sent")) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  // Copy buttons (data-copy="#id", recovery codes): hidden in the markup, shown only where the
  // clipboard can be written; a click copies that element's text and says so.
  function showCopyButtons() {
    if (!navigator.clipboard) return;
    document.querySelectorAll("[data-copy][hidden]").forEach(function (button) { button.hidden = false; });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    var source = button && document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    navigator.clipboard.writeText(source.textContent).then(function () {
      button.textContent = "Copied";
    }, function () {
      button.textContent = "Copy failed: select the codes instead";
    });
  });
  document.addEventListener("htmx:afterSettle", showCopyButtons);

  // Scripts only some pages need (data-script="passkeys": static/passkeys.js) come once the
  // first element naming one is in the page, on load or swapped in by htmx, which runs no
  // <script> itself (allowScriptTags false). script-src 'self' allows these.
  var STATIC = document.currentScript.src.replace(/[^/]*$/, "");
  var added = {};
  function addScript(el) {
    var name = el.getAttribute("data-script");
    if (added[name]) return;
    added[name] = true;
    var script = document.createElement("script");
    script.src = STATIC + name + ".js";
    document.head.appendChild(script);
  }
  function addNeededScripts(root) {
    if (root.matches && root.matches("[data-script]")) addScript(root);
    root.querySelectorAll("[data-script]").forEach(addScript);
  }
  addNeededScripts(document);
  document.addEventListener("htmx:load", function (event) { addNeededScripts(event.detail.elt); });

  document.addEventListener("DOMContentLoaded", function () { adoptServerToasts(); localTimes(); showCopyButtons(); });
})();
