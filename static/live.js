// Live updates (GET /events): what others change shows on the users table, the audit log and
// the dashboard without a reload, and rows being edited say by whom. Pages read the same
// without JavaScript or EventSource; this only adds to them.
//
// One stream per browser, not per tab: HTTP/1.1 allows six connections per host, so a stream
// in every tab would leave the seventh tab unable to save. The stream lives in a SharedWorker
// (static/live-worker.js) that every tab joins. Where there is no SharedWorker (Chrome on
// Android), tabs elect a leader with navigator.locks, whose dedicated worker holds the stream
// and which relays it over a BroadcastChannel; when the leader closes, the lock passes on and
// the next tab resumes from the last event it saw. Only without either does each tab open its
// own stream: better late updates than none.
(function () {
  "use strict";

  if (!window.EventSource || !window.Worker) return;

  var WORKER = document.currentScript.src.replace(/live\.js(\?.*)?$/, "live-worker.js");
  var PRESENCE_REFRESH_MS = 15000;  // the contract's PRESENCE_REFRESH
  var PRESENCE_TTL_MS = 40000;      // and PRESENCE_TTL: a silent editor has gone
  var HIGHLIGHT_MS = 3000;          // as long as app.css's live-changed animation
  var EDITS = ["update", "delete", "restore", "unlock"];
  var COUNTED = ["login", "login_failed", "create", "update", "delete", "restore"];

  var leave = null;   // ends this tab's part in the stream
  var last = 0;       // the newest change this page has (changes at or before it are dropped)
  var presence = {};  // row id -> {editor id -> {name, seen}}
  var editing = {};   // row id -> refresh timer, for the editors open in this tab
  var unseen = { added: 0, changed: 0 };

  // ---- the stream ------------------------------------------------------------------------

  function joinShared(after) {
    var worker = new SharedWorker(WORKER, { name: "gatehouse-live" });
    worker.port.onmessage = function (event) { receive(event.data); };
    worker.port.postMessage({ type: "join", after: after });
    return function () { worker.port.postMessage({ type: "leave" }); worker.port.close(); };
  }

  function joinLeader(after) {
    var channel = new BroadcastChannel("gatehouse-live");
    var stop = new AbortController();
    var worker = null, release = null;
    channel.onmessage = function (event) {
      // A tab that joins asks for the latest changes (it drops what its page already had).
      if (event.data.type === "hello") { if (worker) worker.postMessage({ type: "join" }); }
      else receive(event.data);
    };
    navigator.locks.request("gatehouse-live", { signal: stop.signal }, function () {
      worker = new Worker(WORKER);
      worker.onmessage = function (event) { channel.postMessage(event.data); receive(event.data); };
      worker.postMessage({ type: "join", after: last || after });
      return new Promise(function (resolve) { release = resolve; });
    }).catch(function () {});
    channel.postMessage({ type: "hello" });
    return function () {
      stop.abort();
      if (worker) worker.terminate();
      if (release) release();
      channel.close();
    };
  }

  function joinAlone(after) {
    var worker = new Worker(WORKER);
    worker.onmessage = function (event) { receive(event.data); };
    worker.postMessage({ type: "join", after: after });
    return function () { worker.terminate(); };
  }

  // Signed-in pages carry the chain position they were drawn at; others have no stream.
  function sync() {
    var after = document.body.getAttribute("data-live-after");
    if (after !== null) last = Math.max(last, parseInt(after, 10) || 0);  // the page shows those
    if (after !== null && !leave) {
      leave = window.SharedWorker ? joinShared(last)
        : navigator.locks && window.BroadcastChannel ? joinLeader(last) : joinAlone(last);
    } else if (after === null && leave) {
      leave();
      leave = null;
    }
  }

  function receive(message) {
    var data = message.data || {};
    if (message.type === "change") {
      if (data.position <= last) return;
      last = data.position;
      changed(data);
    } else if (message.type === "presence") {
      seen(data);
    } else if (message.type === "reload") {
      // Too far behind, or the chain went back (a database restored): the view says it is
      // out of date, and what comes after the head is new, even below where this page was.
      if (typeof data.position === "number") last = data.position;
      behind();
    }
  }

  // ---- helpers ---------------------------------------------------------------------------

  function me() {
    var who = document.querySelector(".who strong");
    return who ? who.textContent : null;
  }

  function csrfToken() {
    var holder = document.querySelector("[hx-headers]");
    try { return JSON.parse(holder.getAttribute("hx-headers"))["X-CSRF-Token"]; } catch (e) { return ""; }
  }

  // A fragment or page as htmx would ask for it (HX-Request picks the fragment).
  function get(url, fragment) {
    return fetch(url, { credentials: "same-origin", headers: fragment ? { "HX-Request": "true" } : {} })
      .then(function (response) {
        return response.text().then(function (text) { return { ok: response.ok, status: response.status, text: text }; });
      })
      .catch(function () { return { ok: false, status: 0, text: "" }; });
  }

  function parseRow(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    return template.content.querySelector("tr");
  }

  function clock(at) {
    var when = new Date(at);
    return isNaN(when) ? "" : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function highlight(el) {
    el.classList.add("live-changed");
    window.setTimeout(function () { el.classList.remove("live-changed"); }, HIGHLIGHT_MS);
  }

  function changed(event) {
    if (document.getElementById("users-rows")) userChanged(event);
    if (document.getElementById("audit-rows")) auditChanged();
    if (document.querySelector(".stats") && COUNTED.indexOf(event.action) >= 0) statsLater();
  }

  function behind() {
    if (document.getElementById("users-rows")) countUnseen("changed");
    if (document.getElementById("audit-rows")) auditChanged();
    if (document.querySelector(".stats")) statsLater();
  }

  // ---- the users table -------------------------------------------------------------------

  function userChanged(event) {
    if (event.target_type !== "user") return;
    var row = document.getElementById("user-" + event.target_id);
    if (!row) {
      if (event.actor === me()) return;  // this tab's own creation reloads the table itself
      if (event.action === "create" || event.action === "restore") countUnseen("added");
      else if (event.action === "delete") countUnseen("changed");
      return;
    }
    if (row.hasAttribute("data-editing")) {
      if (EDITS.indexOf(event.action) >= 0) noteInEditor(row, event);
      return;
    }
    if (event.action === "delete") {
      row.classList.add("user-row-gone");
      countUnseen("changed");
      return;
    }
    get("/users/" + event.target_id + "/row", true).then(function (answer) {
      var current = document.getElementById("user-" + event.target_id);
      var fresh = answer.ok && parseRow(answer.text);
      if (fresh && current && !current.hasAttribute("data-editing") && !busy(current)) replaceRow(current, fresh);
    });
  }

  // A row with a request of its own on the way (an edit opening, a delete) is left to its answer.
  function busy(row) {
    return row.matches("[aria-busy], .htmx-request") || row.querySelector("[aria-busy], .htmx-request") !== null;
  }

  // In place, as it was: the roving tab stop, the selection for bulk actions, the focus.
  function replaceRow(row, fresh) {
    var focused = row.contains(document.activeElement) && document.activeElement;
    var action = focused && focused.getAttribute("data-action");
    var box = row.querySelector("[data-select]"), freshBox = fresh.querySelector("[data-select]");
    if (box && freshBox && !freshBox.disabled) {
      freshBox.checked = box.checked;
      fresh.setAttribute("aria-selected", box.checked ? "true" : "false");
    }
    fresh.tabIndex = row.tabIndex;
    row.replaceWith(fresh);
    htmx.process(fresh);
    paintPresence(fresh.dataset.id);
    highlight(fresh);
    if (focused) (action && fresh.querySelector("[data-action=" + action + "]") || fresh).focus();
  }

  // An editor is never replaced under the person typing: it says what happened, and "review"
  // shows their values beside these. The form keeps the version it was opened with, so the
  // save meets today's conflict (409, theirs and mine) and the person decides there.
  function noteInEditor(row, event) {
    var editor = row.querySelector(".row-editor");
    var note = editor.querySelector(".live-note");
    if (!note) {
      note = document.createElement("p");
      note.className = "live-note";
      note.setAttribute("role", "status");
      note.appendChild(document.createElement("span"));
      var review = document.createElement("button");
      review.type = "button";
      review.className = "button button-small button-quiet";
      review.setAttribute("data-live-review", "");
      review.textContent = "Review";
      note.appendChild(document.createTextNode(" "));
      note.appendChild(review);
      editor.insertBefore(note, editor.firstChild);
    }
    var verb = event.action === "delete" ? "Deleted" : "Changed";
    note.firstChild.textContent = verb + " by " + event.actor + " at " + clock(event.at) + " —";
  }

  var FIELDS = ["username", "email", "role", "active"];

  function fieldValue(root, name) {
    var field = root.querySelector("[name=" + name + "]");
    if (!field) return null;
    if (field.type === "checkbox") return field.checked ? "Yes" : "No";
    return field.value;
  }

  function review(row) {
    var note = row.querySelector(".live-note");
    get("/users/" + row.dataset.id + "/edit", true).then(function (answer) {
      row.querySelectorAll(".theirs[data-live]").forEach(function (el) { el.remove(); });
      if (!answer.ok) {
        note.firstChild.textContent = answer.status === 404
          ? "This user has been deleted; saving will say so."
          : "You can no longer edit this user; saving will say why.";
        return;
      }
      var theirs = parseRow(answer.text);
      var differ = 0;
      FIELDS.forEach(function (name) {
        var mine = fieldValue(row, name), their = theirs && fieldValue(theirs, name);
        if (mine === null || their === null || mine === their) return;
        differ += 1;
        var line = document.createElement("p");
        line.className = "theirs";
        line.setAttribute("data-live", "");
        line.appendChild(document.createTextNode("Theirs: "));
        line.appendChild(document.createElement("strong")).textContent = their;
        row.querySelector(".field-" + name).appendChild(line);
      });
      note.firstChild.textContent = differ
        ? "Their values are shown under yours. Saving will ask you to choose."
        : "Their change leaves these fields as they are. Saving will ask you to confirm.";
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-live-review]");
    if (button) review(button.closest("tr"));
    var show = event.target.closest && event.target.closest("[data-live-show]");
    if (show) {
      // The focus leaves with the button, so grid.js lands on the reloaded table's first row.
      show.parentNode.remove();
      unseen = { added: 0, changed: 0 };
      htmx.trigger(document.body, "users-changed");
    }
  });

  // Rows added or removed elsewhere do not move the table under the keyboard: a quiet
  // count offers to show them.
  function countUnseen(kind) {
    var table = document.getElementById("users-table");
    if (!table) return;
    unseen[kind] += 1;
    var holder = document.getElementById("users-live-more");
    if (!holder) {
      holder = document.createElement("p");
      holder.id = "users-live-more";
      holder.className = "live-more";
      holder.setAttribute("role", "status");
      var button = document.createElement("button");
      button.type = "button";
      button.className = "button button-small button-quiet";
      button.setAttribute("data-live-show", "");
      holder.appendChild(button);
      table.parentNode.insertBefore(holder, table);
    }
    var n = unseen.added + unseen.changed;
    holder.firstChild.textContent = unseen.changed ? n + (n === 1 ? " change" : " changes") + " — show" : n + " new — show";
  }

  // ---- presence --------------------------------------------------------------------------

  function announce(id, on) {
    var body = new URLSearchParams({ editing: on ? "1" : "0", csrf_token: csrfToken() });
    // keepalive: the last word of a tab being closed still arrives.
    fetch("/users/" + id + "/presence", { method: "POST", body: body, credentials: "same-origin", keepalive: true })
      .catch(function () {});
  }

  // The editors open in this tab, announced when they appear and while they stay open, and
  // withdrawn when they go (saved, cancelled, the table reloaded).
  function reconcileEditors() {
    if (!leave) return;
    var open = {};
    document.querySelectorAll("[data-grid] tr[data-editing][data-id]").forEach(function (row) { open[row.dataset.id] = true; });
    Object.keys(open).forEach(function (id) {
      if (editing[id]) return;
      announce(id, true);
      editing[id] = window.setInterval(function () { announce(id, true); }, PRESENCE_REFRESH_MS);
    });
    Object.keys(editing).forEach(function (id) {
      if (open[id]) return;
      window.clearInterval(editing[id]);
      delete editing[id];
      announce(id, false);
    });
  }

  function closeEditors() {
    Object.keys(editing).forEach(function (id) {
      window.clearInterval(editing[id]);
      announce(id, false);
    });
    editing = {};
  }

  function seen(event) {
    if (event.editor === me()) return;
    var editors = presence[event.row] = presence[event.row] || {};
    if (event.editing) editors[event.editor_id] = { name: event.editor, seen: Date.now() };
    else delete editors[event.editor_id];
    paintPresence(event.row);
  }

  // "X is editing", inside the row: advisory, never a lock.
  function paintPresence(id) {
    var row = document.getElementById("user-" + id);
    var editors = presence[id] || {};
    var names = Object.keys(editors).map(function (key) { return editors[key].name; });
    if (!row) return;
    var el = row.querySelector(".presence");
    if (!names.length) {
      if (el) el.textContent = "";
      return;
    }
    if (!el) {
      el = document.createElement("span");
      el.className = "presence";
      el.setAttribute("aria-live", "polite");
      (row.querySelector(".col-username") || row.querySelector(".row-editor")).appendChild(el);
    }
    el.textContent = names.join(", ") + (names.length === 1 ? " is editing" : " are editing");
  }

  // An editor whose tab vanished stops refreshing: let it go after the server's TTL.
  window.setInterval(function () {
    var now = Date.now();
    Object.keys(presence).forEach(function (id) {
      var editors = presence[id], gone = false;
      Object.keys(editors).forEach(function (key) {
        if (now - editors[key].seen > PRESENCE_TTL_MS) { delete editors[key]; gone = true; }
      });
      if (gone) paintPresence(id);
    });
  }, 5000);

  // ---- the audit log and the dashboard ---------------------------------------------------

  function firstAuditPage() {
    var params = new URLSearchParams(window.location.search);
    return !params.get("after") && !params.get("before") && (params.get("page") || "1") === "1"
      && !/^\/audit\/\d+/.test(window.location.pathname);
  }

  var auditBusy = false, auditAgain = false;

  // On the newest page the new events come in at the top, marked; rows already shown stay
  // as they are (one being reverted keeps its form). On an older page a count offers them.
  function auditChanged() {
    if (!firstAuditPage()) return countNewEvents();
    if (auditBusy) { auditAgain = true; return; }
    auditBusy = true;
    get(window.location.href, false).then(function (answer) {
      var tbody = document.getElementById("audit-rows");
      var doc = new DOMParser().parseFromString(answer.text, "text/html");
      var fresh = doc.getElementById("audit-rows");
      if (answer.ok && tbody && fresh) {
        var first = tbody.querySelector("tr[data-row]");
        Array.prototype.slice.call(fresh.querySelectorAll("tr[data-row]")).some(function (row) {
          if (document.getElementById(row.id)) return true;
          tbody.insertBefore(document.importNode(row, true), first);
          var added = document.getElementById(row.id);
          highlight(added);
          added.tabIndex = -1;
          htmx.process(added);
          return false;
        });
        tbody.querySelectorAll("tr:not([data-row])").forEach(function (row) { if (tbody.querySelector("tr[data-row]")) row.remove(); });
      }
    }).finally(function () {
      auditBusy = false;
      if (auditAgain) { auditAgain = false; auditChanged(); }
    });
  }

  var newEvents = 0;
  function countNewEvents() {
    var table = document.getElementById("audit-table");
    if (!table) return;
    newEvents += 1;
    var link = document.getElementById("audit-live-more");
    if (!link) {
      var holder = document.createElement("p");
      holder.className = "live-more";
      holder.setAttribute("role", "status");
      link = document.createElement("a");
      link.id = "audit-live-more";
      var params = new URLSearchParams(window.location.search);
      ["after", "before", "page"].forEach(function (key) { params.delete(key); });
      link.href = "/audit" + (params.toString() ? "?" + params : "");
      holder.appendChild(link);
      table.parentNode.insertBefore(holder, table);
      htmx.process(holder);
    }
    link.textContent = newEvents + " new event" + (newEvents === 1 ? "" : "s") + " — show";
  }

  // The dashboard's counts, refreshed at most once a second whatever the traffic; only the
  // numbers change, so a focused link keeps its focus.
  var statsTimer = null;
  function statsLater() {
    if (statsTimer) return;
    statsTimer = window.setTimeout(function () {
      get(window.location.href, false).then(function (answer) {
        statsTimer = null;
        var fresh = new DOMParser().parseFromString(answer.text, "text/html").querySelectorAll(".stats strong");
        var shown = document.querySelectorAll(".stats strong");
        if (!answer.ok || fresh.length !== shown.length) return;
        shown.forEach(function (el, i) { el.textContent = fresh[i].textContent; });
      }, function () { statsTimer = null; });
    }, 1000);
  }

  // ---- page life -------------------------------------------------------------------------

  // A page loaded whole by htmx (a login, a logout) keeps the old <body>: copy its position.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var text = event.detail.serverResponse || "";
    if (!/^\s*<!doctype html>/i.test(text)) return;
    var tag = /<body\b[^>]*>/i.exec(text);
    if (!tag) return;
    var body = new DOMParser().parseFromString("<html>" + tag[0] + "</body></html>", "text/html").body;
    var after = body.getAttribute("data-live-after");
    if (after === null) document.body.removeAttribute("data-live-after");
    else document.body.setAttribute("data-live-after", after);
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    sync();
    var target = event.detail.target;
    if (target && (target.id === "users-table" || target === document.body)) {
      var more = document.getElementById("users-live-more");
      if (more) more.remove();
      unseen = { added: 0, changed: 0 };
      newEvents = 0;
    }
    reconcileEditors();
    Object.keys(presence).forEach(paintPresence);
  });

  window.addEventListener("pagehide", function () {
    closeEditors();
    if (leave) { leave(); leave = null; }
  });
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { sync(); reconcileEditors(); }
  });

  document.addEventListener("DOMContentLoaded", function () { sync(); reconcileEditors(); });
})();
