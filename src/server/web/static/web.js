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

  // The editor of who may publish: the files are checked as they are
  // typed (half a second after the last key), exactly as a publish would
  // check them, and the error is shown under its file with its line.
  var editor = document.getElementById("editor");
  if (editor && editor.dataset.check) {
    var asked = 0;
    var timer = null;
    var clear = function () {
      editor.querySelectorAll(".check").forEach(function (c) {
        c.className = "check";
        c.textContent = "";
      });
      editor.querySelectorAll("textarea").forEach(function (t) { t.removeAttribute("aria-invalid"); });
    };
    var show = function (res) {
      clear();
      var first = document.getElementById("check-0");
      if (res.ok) {
        if (first) {
          first.className = "check ok";
          first.textContent = "\u2714 valid: it would publish";
        }
        return;
      }
      var i = 0;
      editor.querySelectorAll("input[name=path]").forEach(function (p, k) {
        if (res.file && p.value === res.file) { i = k; }
      });
      var box = document.getElementById("check-" + i) || first;
      var area = document.getElementById("content-" + i);
      if (!box) { return; }
      box.className = "check bad";
      var head = document.createElement("div");
      head.className = "check-message";
      head.textContent = "\u2716 " + (res.line ? "line " + res.line + ", column " + res.column + ": " : "") + res.error;
      box.appendChild(head);
      if (area && res.line) {
        area.setAttribute("aria-invalid", "true");
        var text = area.value.replace(/\r\n/g, "\n").split("\n")[res.line - 1];
        if (text !== undefined) {
          var pre = document.createElement("pre");
          var gutter = String(res.line) + " | ";
          pre.textContent = gutter + text + "\n" + " ".repeat(gutter.length + Math.max(0, res.column - 1)) + "^";
          box.appendChild(pre);
        }
      }
      box.dataset.line = String(res.line || "");
    };
    var check = function () {
      var mine = ++asked;
      fetch(editor.dataset.check, {
        method: "POST",
        credentials: "same-origin",
        body: new URLSearchParams(new FormData(editor))
      })
        .then(function (r) {
          if (!r.ok) { throw new Error("the check answered " + r.status); }
          return r.json();
        })
        .then(function (res) { if (mine === asked) { show(res); } })
        .catch(function (e) {
          if (mine !== asked) { return; }
          clear();
          var first = document.getElementById("check-0");
          if (first) { first.className = "check bad"; first.textContent = String(e.message || e); }
        });
    };
    editor.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(check, 500);
    });
    check();
  }
})();
