// The command palette (partials/palette.html): Ctrl+K or ⌘K anywhere opens it; typing filters
// the pages and actions the server listed for this person and asks the server for users
// (where the dialog names data-users-url). The WAI-ARIA combobox pattern: focus stays in the
// field, aria-activedescendant names the option that arrows move to, Enter acts on it, Esc
// closes the dialog and focus goes back where it was.
(function () {
  "use strict";

  var SEARCH_DELAY_MS = 150;  // one request per pause in typing, not one per key
  var opener = null;          // what had focus before the palette opened
  var timer = null;
  var inFlight = null;        // the users request under way, aborted by the next one

  function palette() { return document.getElementById("palette"); }
  function field() { return document.getElementById("palette-input"); }
  function list() { return document.getElementById("palette-list"); }
  function shown() {
    return Array.prototype.slice.call(list().querySelectorAll("[role=option]:not([hidden])"));
  }
  function active() { return list().querySelector("[role=option][aria-selected=true]"); }

  function setActive(option) {
    list().querySelectorAll("[role=option][aria-selected=true]").forEach(function (o) {
      o.setAttribute("aria-selected", "false");
    });
    if (option) {
      option.setAttribute("aria-selected", "true");
      field().setAttribute("aria-activedescendant", option.id);
      option.scrollIntoView({ block: "nearest" });
    } else {
      field().removeAttribute("aria-activedescendant");
    }
  }

  function announce() {
    var n = shown().length;
    palette().querySelector("[data-palette-status]").textContent =
      n === 0 ? "Nothing matches." : n === 1 ? "1 result." : n + " results.";
  }

  // ---- what is listed ----
  function filter(text) {
    var words = text.toLowerCase().split(/\s+/).filter(Boolean);
    list().querySelectorAll("[role=option]:not([data-user])").forEach(function (option) {
      var label = option.querySelector(".palette-label").textContent.toLowerCase();
      option.hidden = !words.every(function (w) { return label.indexOf(w) >= 0; });
    });
  }

  function userOption(user) {
    var option = document.createElement("li");
    option.id = "palette-user-" + user.id;
    option.className = "palette-option";
    option.setAttribute("role", "option");
    option.setAttribute("aria-selected", "false");
    option.setAttribute("data-user", "");
    option.setAttribute("data-href", user.url);
    var label = document.createElement("span");
    label.className = "palette-label";
    label.textContent = user.username;
    var email = document.createElement("span");
    email.className = "palette-detail";
    email.textContent = user.email;
    var kind = document.createElement("span");
    kind.className = "palette-kind";
    kind.textContent = "User";
    option.append(label, email, kind);
    return option;
  }

  function showUsers(users) {
    list().querySelectorAll("[data-user]").forEach(function (o) { o.remove(); });
    users.forEach(function (user) { list().appendChild(userOption(user)); });
    if (!active() || active().hidden) setActive(shown()[0]);
    announce();
  }

  function findUsers(text) {
    var url = palette().dataset.usersUrl;
    window.clearTimeout(timer);
    if (inFlight) inFlight.abort();
    if (!url || !text.trim()) { showUsers([]); return; }
    timer = window.setTimeout(function () {
      var request = inFlight = new AbortController();
      fetch(url + "?q=" + encodeURIComponent(text.trim()), {
        headers: { Accept: "application/json" }, signal: request.signal
      }).then(function (response) {
        return response.ok ? response.json() : { users: [] };
      }).then(function (answer) {
        if (field().value === text) showUsers(answer.users);
      }).catch(function () { /* aborted by newer typing, or offline: the other options stay */ });
    }, SEARCH_DELAY_MS);
  }

  function update() {
    var text = field().value;
    filter(text);
    setActive(shown()[0]);
    announce();
    findUsers(text);
  }

  // ---- opening and closing ----
  function open() {
    var dialog = palette();
    if (!dialog || dialog.open) return;
    opener = document.activeElement;
    field().value = "";
    update();
    dialog.showModal();
    field().focus();
  }

  function close() {
    var dialog = palette();
    if (dialog && dialog.open) dialog.close();
  }

  // ---- acting ----
  function effectiveTheme() {
    var chosen = document.documentElement.getAttribute("data-theme");
    if (chosen) return chosen;
    return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  // Saved like the profile's form (app.js applies the answer's event to <html>); the form
  // itself, when this is the profile, is swapped so that it shows the new choice.
  function toggleTheme(option) {
    var singleKeys = document.documentElement.getAttribute("data-single-key-shortcuts") !== "off";
    var form = document.getElementById("profile-preferences");
    htmx.ajax("POST", option.dataset.href, {
      source: palette(),
      values: { theme: effectiveTheme() === "dark" ? "light" : "dark", single_key_shortcuts: singleKeys ? "1" : "" },
      target: form ? "#profile-preferences" : undefined,
      swap: form ? "outerHTML" : "none"
    });
  }

  function act(option) {
    if (!option) return;
    var run = option.dataset.run;
    var control = option.dataset.click && document.querySelector(option.dataset.click);
    opener = run === "theme" ? opener : null;  // anything else moves focus on purpose
    close();
    if (run === "theme") toggleTheme(option);
    else if (run === "logout") document.querySelector("form[action='/logout'] [type=submit]").click();
    else if (control) { htmx.process(control); control.click(); }
    else window.location.assign(option.dataset.href);
  }

  function step(by) {
    var options = shown();
    if (!options.length) return;
    var i = options.indexOf(active()) + by;
    setActive(options[(i + options.length) % options.length]);
  }

  document.addEventListener("keydown", function (event) {
    var isK = event.key === "k" || event.key === "K";
    if (isK && (event.ctrlKey || event.metaKey) && !event.altKey && !event.shiftKey) {
      var dialog = palette();
      if (!dialog) return;
      if (dialog.open) { event.preventDefault(); close(); return; }
      if (document.querySelector("dialog[open]")) return;  // another dialog has the floor
      event.preventDefault();
      open();
      return;
    }
    if (event.target !== field()) return;
    if (event.key === "ArrowDown") { event.preventDefault(); step(1); }
    else if (event.key === "ArrowUp") { event.preventDefault(); step(-1); }
    else if (event.key === "Enter") { event.preventDefault(); act(active()); }
  }, true);

  document.addEventListener("input", function (event) {
    if (event.target === field()) update();
  });

  document.addEventListener("click", function (event) {
    var option = event.target.closest && event.target.closest("#palette-list [role=option]");
    if (option) act(option);
    else if (event.target === palette()) close();  // a click on the backdrop
  });

  document.addEventListener("mousemove", function (event) {
    var option = event.target.closest && event.target.closest("#palette-list [role=option]");
    if (option && option !== active()) setActive(option);
  });

  document.addEventListener("close", function (event) {
    if (event.target !== palette()) return;
    window.clearTimeout(timer);
    if (inFlight) inFlight.abort();
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  }, true);
})();
