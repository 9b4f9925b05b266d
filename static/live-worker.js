// The one event stream (GET /events) of this browser, shared by its tabs; static/live.js
// explains who runs it. As a SharedWorker each tab is a port; as the dedicated worker of one
// tab (browsers without SharedWorker) the worker itself is the only port.
"use strict";

var TYPES = ["change", "presence", "reload"];
var KEPT = 200;     // the latest changes, replayed to a tab that joins (it drops what its page had)
var ports = [];
var recent = [];
var source = null;

function broadcast(message) {
  if (message.type === "change") {
    recent.push(message);
    if (recent.length > KEPT) recent.shift();
  }
  ports.forEach(function (port) { port.postMessage(message); });
}

// Started where the first tab's page was drawn; after a drop EventSource reconnects by itself,
// sending Last-Event-ID, so nothing in between is lost.
function open(after) {
  if (typeof EventSource === "undefined") return;
  source = new EventSource("/events?after=" + encodeURIComponent(after || 0));
  TYPES.forEach(function (type) {
    source.addEventListener(type, function (event) {
      var data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      broadcast({ type: type, data: data });
    });
  });
  // Refused for good (signed out, too many streams): the pages work as without it; the next
  // tab to join tries again.
  source.addEventListener("error", function () {
    if (source && source.readyState === EventSource.CLOSED) source = null;
  });
}

function attach(port) {
  port.onmessage = function (event) {
    var message = event.data || {};
    if (message.type === "join") {
      if (ports.indexOf(port) < 0) ports.push(port);
      recent.forEach(function (change) { port.postMessage(change); });
      if (!source) open(message.after);
    } else if (message.type === "leave") {
      ports = ports.filter(function (p) { return p !== port; });
      if (!ports.length && source) {
        source.close();
        source = null;
        recent = [];
      }
    }
  };
}

if ("onconnect" in self) self.onconnect = function (event) { attach(event.ports[0]); };
else attach(self);
