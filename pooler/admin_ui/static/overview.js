// The overview's live numbers: a Server-Sent Events stream from the console while the tab
// is visible (closed when it is hidden, opened again when it shows). Each event carries only
// what changed: texts by key (`data-live`), quota meters (`data-live-meter`), the attention
// list (rebuilt with textContent, never HTML) and the page's layout (a change asks for a
// reload). Without this script the page shows the numbers of its last load.
"use strict";
(function () {
  var root = document.querySelector("[data-overview-events]");
  if (!root || !window.EventSource) return;
  var url = root.getAttribute("data-overview-events");
  var status = document.getElementById("live-status");
  var texts = {}, meters = {};
  root.querySelectorAll("[data-live]").forEach(function (el) { texts[el.getAttribute("data-live")] = el; });
  root.querySelectorAll("[data-live-meter]").forEach(function (el) { meters[el.getAttribute("data-live-meter")] = el; });
  var source = null, ended = false;

  function say(text) { if (status) status.textContent = text; }

  function start() {
    if (source || ended || document.hidden) return;
    source = new EventSource(url);
    source.addEventListener("open", function () { say("Live: refreshed every 2 seconds while this tab is visible."); });
    source.addEventListener("overview", function (e) { apply(JSON.parse(e.data)); });
    source.addEventListener("end", function (e) {
      finish(JSON.parse(e.data) === "signed-out"
        ? "Your session has ended: live updates stopped. Reload the page to sign in again."
        : "Live updates stopped: reload the page.");
    });
    source.addEventListener("error", function () {
      if (source && source.readyState === EventSource.CLOSED) {
        finish("Live updates stopped: reload the page.");
      } else {
        say("Reconnecting…");
      }
    });
  }

  function stop() { if (source) { source.close(); source = null; } }
  function finish(text) { stop(); ended = true; say(text); }

  function apply(data) {
    var values = data.values || {};
    Object.keys(values).forEach(function (key) { if (texts[key]) texts[key].textContent = values[key]; });
    var bars = data.meters || {};
    Object.keys(bars).forEach(function (key) {
      var meter = meters[key];
      if (!meter) return;
      meter.max = bars[key][1];
      meter.value = bars[key][0];
    });
    if (data.attention) attention(data.attention);
    if (data.layout !== undefined && data.layout !== root.getAttribute("data-layout")) {
      var notice = document.getElementById("layout-changed");
      if (notice) notice.hidden = false;
    }
  }

  function cell(label, child) {
    var td = document.createElement("td");
    td.setAttribute("data-label", label);
    td.appendChild(child);
    return td;
  }

  function attention(rows) {
    var body = document.getElementById("attention-rows");
    if (!body) return;
    var fresh = document.createDocumentFragment();
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      var link = document.createElement("a");
      link.href = row[1];
      link.textContent = row[0];
      tr.appendChild(cell("Account", link));
      tr.appendChild(cell("Pool", document.createTextNode(row[2])));
      tr.appendChild(cell("Why", document.createTextNode(row[3])));
      fresh.appendChild(tr);
    });
    body.replaceChildren(fresh);
    document.getElementById("attention-table").hidden = rows.length === 0;
    document.getElementById("attention-none").hidden = rows.length !== 0;
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      stop();
      if (!ended) say("Paused while this tab is hidden.");
    } else {
      start();
    }
  });
  start();
})();
