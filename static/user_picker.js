// Username fields that suggest users as they are typed: an <input data-user-picker="URL"
// list="…" data-script="user_picker"> fills its <datalist> from URL?q=… (the users table's
// search, JSON, as the command palette uses it; app.js adds this script for the first such
// field). The server reads the field as a username; without JavaScript it is just that.
(function () {
  "use strict";

  var DELAY_MS = 200;
  var timer = null;
  var inFlight = null;

  function option(user) {
    var el = document.createElement("option");
    el.value = user.username;
    el.label = user.email;
    return el;
  }

  function suggest(field) {
    var text = field.value.trim();
    if (inFlight) inFlight.abort();
    if (!text || text.charAt(0) === "#") { field.list.replaceChildren(); return; }
    var request = inFlight = new AbortController();
    fetch(field.dataset.userPicker + "?q=" + encodeURIComponent(text), {
      headers: { Accept: "application/json" }, signal: request.signal
    }).then(function (response) {
      return response.ok ? response.json() : { users: [] };
    }).then(function (answer) {
      if (field.value.trim() === text) field.list.replaceChildren.apply(field.list, answer.users.map(option));
    }).catch(function () { /* aborted by newer typing, or offline: the field still works */ });
  }

  document.addEventListener("input", function (event) {
    var field = event.target;
    if (!(field instanceof HTMLInputElement) || !field.dataset.userPicker || !field.list) return;
    window.clearTimeout(timer);
    timer = window.setTimeout(function () { suggest(field); }, DELAY_MS);
  });
})();
