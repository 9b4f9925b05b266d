// Tables from the keyboard (the users table, the audit log): the WAI-ARIA grid pattern with
// one Tab stop (a roving tabindex on the rows), bound by data attributes:
//   [data-grid] the table, [data-grid-region] what htmx reloads, [data-grid-search] the field
//   `/` focuses, dialog[data-grid-help] the `?` help, [data-action=…] and [data-page=…] links.
// Shortcuts are ignored while typing.
(function () {
  "use strict";

  var pendingFocus = null;   // what to focus once the table has been reloaded
  var selectionAnchor = null;

  function grid() { return document.querySelector("[data-grid]"); }
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("[data-grid] tbody tr[data-row]")); }
  function rowOf(el) { return el && el.closest ? el.closest("tr[data-row]") : null; }
  function helpDialog() { return document.querySelector("dialog[data-grid-help]"); }
  function isTyping(el) { return el && el.matches && el.matches("input, select, textarea, [contenteditable]"); }
  function click(selector, root) {
    var el = (root || document).querySelector(selector);
    if (!el) return false;
    // A key can arrive between a swap and htmx's processing of the new content: without
    // this, the click would be a plain link and load the whole page.
    htmx.process(el);
    el.click();
    return true;
  }

  function focusRow(row) {
    if (!row) return;
    rows().forEach(function (r) { r.tabIndex = -1; });
    row.tabIndex = 0;
    row.focus();
  }

  // Without JavaScript each link and button of a row is a Tab stop, as on any page (the row's
  // markup has no tabindex); the grid is one Tab stop, with the keys above between its rows,
  // so they leave the tab order as htmx takes the row in: at load, after a swap, or when
  // live.js puts a changed row in place. A row being edited keeps its fields in it.
  function oneTabStop(row) {
    if (row.hasAttribute("data-editing") || !row.closest("[data-grid]")) return;
    row.querySelectorAll("a, button, input, summary").forEach(function (el) {
      if (!el.hasAttribute("tabindex")) el.tabIndex = -1;
    });
  }

  function ensureTabStop() {
    var all = rows();
    if (all.length && !all.some(function (r) { return r.tabIndex === 0; })) all[0].tabIndex = 0;
  }

  function move(row, step) {
    var all = rows();
    var i = all.indexOf(row) + step;
    focusRow(all[Math.max(0, Math.min(all.length - 1, i))]);
  }

  function focusEditor(row) {
    var field = row.querySelector("[aria-invalid=true]") || row.querySelector("input:not([type=hidden]):not([type=checkbox]), select");
    if (field) field.focus();
  }

  // ---- selection for bulk actions ----
  function setSelected(row, on) {
    var box = row.querySelector("[data-select]");
    if (!box || box.disabled) return;
    box.checked = on;
    row.setAttribute("aria-selected", on ? "true" : "false");
  }

  function toggleSelection(row, range) {
    var all = rows();
    if (range && selectionAnchor && all.indexOf(selectionAnchor) >= 0) {
      var a = all.indexOf(selectionAnchor), b = all.indexOf(row);
      all.slice(Math.min(a, b), Math.max(a, b) + 1).forEach(function (r) { setSelected(r, true); });
    } else {
      var box = row.querySelector("[data-select]");
      if (box) setSelected(row, !box.checked);
      selectionAnchor = row;
    }
    countSelection();
  }

  // The header's box speaks for the page: ticked when every row that can be is, mixed when
  // some are (it works only with JavaScript, so the page shows it hidden). "Select all N
  // matching" stands for the whole filter, beyond this page.
  function countSelection() {
    var boxes = Array.prototype.slice.call(document.querySelectorAll("[data-grid] [data-select]:not(:disabled)"));
    var n = boxes.filter(function (b) { return b.checked; }).length;
    var all = document.querySelector("[data-select-all]");
    if (all) {
      all.hidden = false;
      all.checked = boxes.length > 0 && n === boxes.length;
      all.indeterminate = n > 0 && n < boxes.length;
    }
    var matching = document.querySelector("[data-select-matching]");
    if (matching && matching.checked && n < boxes.length) matching.checked = false;
    if (matching && matching.checked) n = matching.dataset.total;
    document.querySelectorAll("[data-selected-count]").forEach(function (el) { el.textContent = n; });
  }

  function selectPage(on) {
    rows().forEach(function (r) { setSelected(r, on); });
  }

  // The search field, its folded filters (on a phone) opened first.
  function search() {
    var field = document.querySelector("[data-grid-search]");
    var folded = field.closest("details");
    if (folded) folded.open = true;
    field.focus();
  }

  // One row menu open at a time; a click elsewhere or an action taken closes it.
  function closeMenus(except) {
    document.querySelectorAll("details[data-menu][open]").forEach(function (menu) {
      if (menu !== except) menu.open = false;
    });
  }

  // ---- dialogs ----
  // A row's Delete link, where the viewer may delete its user.
  function deleteLink(row) { return row.querySelector("a[data-action=delete]"); }

  function openDelete(row) {
    var dialog = document.getElementById("delete-dialog");
    if (!dialog || !deleteLink(row)) return;
    dialog.querySelector("[data-dialog-username]").textContent = row.dataset.username;
    dialog.returnRow = row;
    dialog.showModal();
  }

  function confirmDelete(dialog) {
    var row = dialog.returnRow;
    dialog.close();
    pendingFocus = { index: rows().indexOf(row) };
    var table = document.querySelector("[data-grid-region]");
    htmx.ajax("POST", deleteLink(row).pathname, {
      source: row, swap: "none", values: { back: table ? table.dataset.url : "/users" }
    });
  }

  function cancelEdit(row) {
    if (row.hasAttribute("data-new")) {
      row.remove();
      focusRow(rows()[0]);
    } else {
      click("[data-action=cancel]", row);
    }
  }

  // A row's Edit and Delete are plain links, which work without JavaScript; one listener for
  // the whole table opens the editor in place (the link's path, as the row's own hx-get did)
  // or asks before deleting. It listens as the click goes down: the links are within hx-boost,
  // whose handler on the link itself would load their page. htmx treats a boosted link as a
  // navigation even when asked this way, hence no history entry and no scroll to the top.
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-action=edit], a[data-action=delete]");
    var row = rowOf(link);
    if (!row || !row.closest("[data-grid]") || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    event.stopPropagation();
    closeMenus();
    if (link.getAttribute("data-action") === "delete") openDelete(row);
    else htmx.ajax("GET", link.pathname, { source: link, target: row, swap: "outerHTML show:none", push: "false" });
  }, true);

  document.addEventListener("click", function (event) {
    var target = event.target;
    var menu = target.closest("details[data-menu]");
    closeMenus(menu && target.closest("summary") ? menu : null);
    if (target.closest("[data-action=cancel-new]")) {
      event.preventDefault();
      cancelEdit(rowOf(target));
      return;
    }
    if (target.closest("[data-action=help]")) {
      helpDialog().showModal();
      return;
    }
    var dialog = target.closest("dialog");
    if (dialog && target.closest("[data-dialog-confirm]")) confirmDelete(dialog);
    if (dialog && target.closest("[data-dialog-cancel]")) dialog.close();
    var all = target.closest("[data-select-all]");
    if (all) {
      selectPage(all.checked);
      var matching = document.querySelector("[data-select-matching]");
      if (matching && !all.checked) matching.checked = false;
      countSelection();
    }
    if (target.closest("[data-select-matching]")) {
      if (target.checked) selectPage(true);
      countSelection();
    }
    var box = target.closest("[data-select]");
    if (box) {
      var row = rowOf(box);
      row.setAttribute("aria-selected", box.checked ? "true" : "false");
      if (event.shiftKey && selectionAnchor) { box.checked = !box.checked; toggleSelection(row, true); }
      else selectionAnchor = row;
      countSelection();
    }
  });

  document.addEventListener("dblclick", function (event) {
    var row = rowOf(event.target);
    if (row && !row.hasAttribute("data-editing")) click("[data-action=edit]", row);
  });

  document.addEventListener("close", function (event) {
    if (event.target.id === "delete-dialog" && event.target.returnRow && !pendingFocus) {
      focusRow(event.target.returnRow);
    }
  }, true);

  document.addEventListener("keydown", function (event) {
    if (!grid() || event.ctrlKey || event.metaKey || event.altKey || document.querySelector("dialog[open]")) return;
    var key = event.key;
    var target = event.target;
    // Single-key shortcuts can be turned off in the profile (WCAG 2.1.4): then a character key
    // (/ ? n 1-9 j k h o r x) does nothing here, while a focused row keeps the keys every grid
    // has (arrows, Home, End, Page keys, Enter, F2, Delete, Space, Esc).
    if (key.length === 1 && key !== " " && document.documentElement.getAttribute("data-single-key-shortcuts") === "off") return;
    var openMenu = document.querySelector("details[data-menu][open]");
    if (key === "Escape" && openMenu) {
      event.preventDefault();
      closeMenus();
      if (openMenu.contains(target)) focusRow(rowOf(openMenu));
      return;
    }
    var row = rowOf(target);

    if (row && row.hasAttribute("data-editing")) {
      if (key === "Escape") { event.preventDefault(); cancelEdit(row); }
      return;  // Tab, Enter and typing work as in any form
    }
    if (isTyping(target)) {
      if (key === "Escape" && target.closest("[role=search]")) { event.preventDefault(); focusRow(rows()[0]); }
      return;
    }

    var handled = true;
    if (key === "/") search();
    else if (key === "?") helpDialog().showModal();
    else if (key === "n") click("[data-action=new]");
    else if (/^[1-9]$/.test(key) && document.querySelector("[data-sort='" + key + "']")) {
      pendingFocus = { index: 0 };
      click("[data-sort='" + key + "']");
    }
    else if (key === "PageDown") { pendingFocus = { index: 0 }; handled = click("[data-page=next]"); }
    else if (key === "PageUp") { pendingFocus = { index: 0 }; handled = click("[data-page=prev]"); }
    else if (!row) {
      if (key === "ArrowDown" || key === "j") focusRow(rows()[0]);
      else handled = false;
    }
    else if (key === "ArrowDown" || key === "j") move(row, 1);
    else if (key === "ArrowUp" || key === "k") move(row, -1);
    else if (key === "Home") focusRow(rows()[0]);
    else if (key === "End") focusRow(rows()[rows().length - 1]);
    else if (key === "Enter" || key === "F2") click("[data-action=edit]", row);
    else if (key === "h") click("[data-action=history]", row);
    else if (key === "o") handled = click("[data-action=open]", row);
    else if (key === "r") handled = click("[data-action=revert]", row);
    else if (key === "Delete") openDelete(row);
    else if (key === "x" || key === "X" || key === " ") toggleSelection(row, event.shiftKey);
    else handled = false;
    if (handled) event.preventDefault();
  });

  // After a swap the old element may be gone: put focus where the person expects it.
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail.target;
    if (!grid()) return;
    ensureTabStop();
    countSelection();
    var swapped = event.detail.elt && event.detail.elt.isConnected ? event.detail.elt : null;
    if (target && target.matches("[data-grid] tbody")) {   // a new row was inserted
      var created = document.getElementById("user-new");
      if (created) focusEditor(created);
    } else if (target && target.matches("[data-grid-region]")) { // the table was reloaded
      var focusLost = !document.activeElement || document.activeElement === document.body || !document.activeElement.isConnected;
      if (!focusLost && isTyping(document.activeElement)) {
        pendingFocus = null;  // the person moved on to a field meanwhile: leave them there
      } else if (pendingFocus) {
        var all = rows();
        var byId = pendingFocus.id && document.getElementById("user-" + pendingFocus.id);
        focusRow(byId || all[Math.min(pendingFocus.index || 0, all.length - 1)]);
        pendingFocus = null;
      } else if (focusLost) {
        focusRow(rows()[0]);
      }
    } else {
      var row = swapped && rowOf(swapped) || (target && target.id ? document.getElementById(target.id) : null);
      row = row && row.matches("tr[data-row]") ? row : null;
      row = row || document.querySelector("[data-grid] tr[data-editing]");
      if (!row) return;
      if (row.hasAttribute("data-editing")) focusEditor(row);
      else focusRow(row);
    }
  });

  // A restore asks the table to reload and names the row to land on.
  document.addEventListener("users-changed", function (event) {
    if (event.detail && event.detail.focus) pendingFocus = { id: event.detail.focus };
  });

  document.addEventListener("htmx:afterProcessNode", function (event) {
    var row = rowOf(event.target);
    if (row) oneTabStop(row);
  });

  document.addEventListener("DOMContentLoaded", function () { rows().forEach(oneTabStop); ensureTabStop(); countSelection(); });
})();
