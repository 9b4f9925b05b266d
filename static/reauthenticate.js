// The "confirm it's you" dialog (web/accounts/reauthentication.py): opened when the server
// adds it to the page, gone when the resumed action's answer arrives or on Cancel/Esc.
(function () {
  "use strict";

  function reauthDialog(el) { return el && el.closest ? el.closest("dialog[data-reauth]") : null; }

  function show(dialog) {
    document.querySelectorAll("dialog[data-reauth]").forEach(function (other) {
      if (other !== dialog) other.remove();
    });
    dialog.showModal();  // focuses the field (autofocus)
  }

  document.addEventListener("htmx:load", function (event) {
    var dialog = event.detail.elt;
    if (dialog.matches && dialog.matches("dialog[data-reauth]")) show(dialog);
  });

  // app.js adds this script when the first dialog arrives (data-script): that one is waiting.
  var waiting = document.querySelectorAll("dialog[data-reauth]:not([open])");
  if (waiting.length) show(waiting[waiting.length - 1]);

  document.addEventListener("click", function (event) {
    var dialog = reauthDialog(event.target);
    if (dialog && event.target.closest("[data-reauth-cancel]")) dialog.close();
  });

  // Closed, whether by Cancel, Esc or success: focus goes back where it was, and the dialog goes.
  document.addEventListener("close", function (event) {
    if (event.target.matches("dialog[data-reauth]")) event.target.remove();
  }, true);

  // The resumed action's answer is for the page behind (a wrong proof's is for the form): the
  // dialog closes before the swap, so that focus can move to what the answer brings.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var dialog = reauthDialog(event.detail.requestConfig && event.detail.requestConfig.elt);
    if (dialog && !dialog.contains(event.detail.target)) dialog.close();
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    var dialog = reauthDialog(event.target);  // a wrong proof's new form, or a new dialog
    if (!dialog) return;
    var field = dialog.querySelector("[aria-invalid=true]") || dialog.querySelector("[autofocus]");
    if (field) field.focus();
  });
})();
