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

  // A POST back to the server; the CSRF header comes from hx-headers on the page.
  function undoForm(url) {
    var form = document.createElement("form");
    form.method = "post";
    form.action = url;
    form.className = "inline-form";
    form.setAttribute("hx-post", url);
    form.setAttribute("hx-swap", "none");
    var button = document.createElement("button");
    button.type = "submit";
    button.className = "button button-small";
    button.textContent = "Undo";
    form.appendChild(button);
    form.addEventListener("htmx:afterRequest", function () { form.closest(".toast").remove(); });
    window.setTimeout(function () { htmx.process(form); }, 0);
    return form;
  }

  function showToast(item) {
    var el = document.createElement("div");
    el.className = "toast toast-" + (item.level || "success");
    el.setAttribute("data-bound", "");
    var text = document.createElement("span");
    text.className = "toast-text";
    text.textContent = item.text;
    el.appendChild(text);
    if (item.undo) el.appendChild(undoForm(item.undo));
    addCloseButton(el);
    region().appendChild(el);
    dismissLater(el, item.undo ? UNDO_MS : TOAST_MS);
  }

  function adoptServerToasts(root) {
    (root || document).querySelectorAll(".toast:not([data-bound])").forEach(function (el) {
      el.setAttribute("data-bound", "");
      addCloseButton(el);
      dismissLater(el, el.hasAttribute("data-ms") ? UNDO_MS : TOAST_MS);
    });
  }

  // Times arrive in UTC (exact value in the title); show them in the viewer's own zone.
  function localTimes(root) {
    (root || document).querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
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

  // Back/forward to a page the server no longer shows this way (the session ended, say):
  // load it for real, so that the server can send the browser where it belongs.
  document.addEventListener("htmx:historyCacheMissLoadError", function () {
    window.location.reload();
  });

  document.addEventListener("DOMContentLoaded", function () { adoptServerToasts(); localTimes(); });
})();
