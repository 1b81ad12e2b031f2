// orch's web view: the live parts of a run's page (picture, nodes and the
// slider through its history) and of a node's page (a log that follows).
// Text from the server goes in with textContent; the picture and the
// nodes table are HTML the server built and escaped.
"use strict";

(function () {
  function get(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) { throw new Error(url + ": " + r.status); }
      return r.text();
    });
  }

  var live = document.getElementById("live");
  if (live) {
    var run = encodeURIComponent(live.dataset.run);
    var slider = document.getElementById("at");
    var label = document.getElementById("at-label");
    var picture = document.getElementById("picture");
    var nodes = document.getElementById("nodes");
    var last = Number(live.dataset.event) || 1;
    var following = true;
    var shown = last;

    function say() {
      label.textContent = "event " + slider.value + " of " + last + (following ? " (live)" : "");
    }
    function draw(at) {
      var url = "/runs/" + run + "/picture.svg" + (following ? "" : "?at=" + at);
      return get(url).then(function (svg) {
        picture.innerHTML = svg;
        picture.dataset.event = String(at);
        shown = at;
      });
    }
    slider.addEventListener("input", function () {
      following = Number(slider.value) >= last;
      say();
      draw(Number(slider.value)).catch(function () {});
    });
    document.getElementById("now").addEventListener("click", function () {
      following = true;
      slider.value = String(last);
      say();
      draw(last).catch(function () {});
    });
    picture.dataset.event = String(last);
    say();

    if (live.dataset.ended !== "true" && window.EventSource) {
      var source = new EventSource("/runs/" + run + "/live");
      source.addEventListener("commit", function (m) {
        var tick = JSON.parse(m.data);
        var status = document.getElementById("status");
        if (status && tick.status !== status.dataset.status) {
          // Paused, running again or ended: the whole page again (its
          // summary and buttons differ).
          source.close();
          window.location.reload();
          return;
        }
        last = Math.max(1, tick.event);
        live.dataset.event = String(tick.event);
        slider.max = String(last);
        if (following) { slider.value = String(last); }
        say();
        var steps = [get("/runs/" + run + "/nodes.html").then(function (h) { nodes.innerHTML = h; })];
        if (following && shown !== last) { steps.push(draw(last)); }
        Promise.all(steps).catch(function () {});
      });
    }
  }

  var log = document.getElementById("log");
  if (log && log.dataset.done !== "true") {
    var after = Number(log.dataset.after) || 0;
    var url = "/runs/" + encodeURIComponent(log.dataset.run) + "/nodes/" + encodeURIComponent(log.dataset.node) + "/log?after=";
    var poll = function () {
      fetch(url + after, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.json(); })
        .then(function (chunk) {
          chunk.lines.forEach(function (l) {
            var span = document.createElement("span");
            span.className = "l-" + l.stream;
            span.textContent = l.text + "\n";
            log.appendChild(span);
          });
          after += chunk.lines.length;
          log.dataset.after = String(after);
          if (chunk.done) {
            log.dataset.done = "true";
          } else {
            setTimeout(poll, 500);
          }
        })
        .catch(function () { setTimeout(poll, 2000); });
    };
    poll();
  }
})();
