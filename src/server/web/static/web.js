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

    // Zoom and pan: the buttons zoom in, out and back to the whole
    // picture, Ctrl (or Cmd) and the wheel zoom at the pointer, a drag
    // pans. The view is the SVG's viewBox, kept while it is redrawn.
    var view = null;
    var full = function (svg) {
      var v = svg.viewBox && svg.viewBox.baseVal;
      return v && v.width ? { x: v.x, y: v.y, w: v.width, h: v.height } : null;
    };
    var whole = null;
    var apply = function () {
      var svg = picture.querySelector("svg");
      if (!svg) { return; }
      if (!svg.dataset.whole) {
        var f = full(svg);
        if (!f) { return; }
        svg.dataset.whole = [f.x, f.y, f.w, f.h].join(" ");
      }
      var w = svg.dataset.whole.split(" ").map(Number);
      whole = { x: w[0], y: w[1], w: w[2], h: w[3] };
      if (view) {
        // A redrawn picture may have grown: the view stays inside it.
        view.w = Math.min(view.w, whole.w);
        view.h = Math.min(view.h, whole.h);
        view.x = Math.max(whole.x, Math.min(view.x, whole.x + whole.w - view.w));
        view.y = Math.max(whole.y, Math.min(view.y, whole.y + whole.h - view.h));
      }
      var v = view || whole;
      svg.setAttribute("viewBox", [v.x, v.y, v.w, v.h].join(" "));
      picture.dataset.zoom = (whole.w / v.w).toFixed(2);
      picture.classList.toggle("zoomed", !!view);
    };
    var zoom = function (factor, fx, fy) {
      if (!whole) { apply(); }
      if (!whole) { return; }
      var v = view || { x: whole.x, y: whole.y, w: whole.w, h: whole.h };
      var w = Math.max(whole.w / 20, Math.min(whole.w, v.w / factor));
      var h = w * whole.h / whole.w;
      if (w >= whole.w) { view = null; apply(); return; }
      var cx = fx === undefined ? 0.5 : fx;
      var cy = fy === undefined ? 0.5 : fy;
      view = { x: v.x + (v.w - w) * cx, y: v.y + (v.h - h) * cy, w: w, h: h };
      apply();
    };
    var zoomIn = document.getElementById("zoom-in");
    if (zoomIn) {
      zoomIn.addEventListener("click", function () { zoom(1.5); });
      document.getElementById("zoom-out").addEventListener("click", function () { zoom(1 / 1.5); });
      document.getElementById("zoom-fit").addEventListener("click", function () { view = null; apply(); });
    }
    picture.addEventListener("wheel", function (ev) {
      if (!(ev.ctrlKey || ev.metaKey)) { return; }
      var svg = picture.querySelector("svg");
      if (!svg) { return; }
      ev.preventDefault();
      var r = svg.getBoundingClientRect();
      zoom(ev.deltaY < 0 ? 1.25 : 0.8, (ev.clientX - r.left) / r.width, (ev.clientY - r.top) / r.height);
    }, { passive: false });
    var drag = null;
    picture.addEventListener("pointerdown", function (ev) {
      var svg = picture.querySelector("svg");
      if (!view || !svg) { return; }
      drag = { px: ev.clientX, py: ev.clientY, x: view.x, y: view.y, r: svg.getBoundingClientRect() };
      try { picture.setPointerCapture(ev.pointerId); } catch (e) { /* a synthetic pointer */ }
      ev.preventDefault();
    });
    picture.addEventListener("pointermove", function (ev) {
      if (!drag || !view) { return; }
      view.x = drag.x - (ev.clientX - drag.px) / drag.r.width * view.w;
      view.y = drag.y - (ev.clientY - drag.py) / drag.r.height * view.h;
      apply();
    });
    var drop = function () { drag = null; };
    picture.addEventListener("pointerup", drop);
    picture.addEventListener("pointercancel", drop);

    function say() {
      label.textContent = "event " + slider.value + " of " + last + (following ? " (live)" : "");
    }
    function draw(at) {
      var url = "/runs/" + run + "/picture.svg" + (following ? "" : "?at=" + at);
      return get(url).then(function (svg) {
        picture.innerHTML = svg;
        apply();
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
    apply();
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
