// Gatehouse's page behaviour: toasts and focus after swaps. Bound from here, never inline (CSP).
(function () {
  "use strict";

  var TOAST_MS = 6000;

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

  function showToast(item) {
    var el = document.createElement("div");
    el.className = "toast toast-" + (item.level || "success");
    var text = document.createElement("span");
    text.className = "toast-text";
    text.textContent = item.message;
    el.appendChild(text);
    addCloseButton(el);
    region().appendChild(el);
    dismissLater(el, item.ms || TOAST_MS);
  }

  function adoptServerToasts(root) {
    (root || document).querySelectorAll(".toast:not([data-bound])").forEach(function (el) {
      el.setAttribute("data-bound", "");
      addCloseButton(el);
      dismissLater(el, TOAST_MS);
    });
  }

  document.addEventListener("toast", function (event) {
    (event.detail.items || []).forEach(showToast);
  });

  // After a navigation swapped the whole page the old focus is gone: land on the new content.
  document.addEventListener("htmx:afterSettle", function (event) {
    adoptServerToasts();
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

  document.addEventListener("DOMContentLoaded", function () { adoptServerToasts(); });
})();
