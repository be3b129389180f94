// Draws each timeline section of the report from the JSON in #data. Every
// lane is a handful of SVG paths whatever the history's size (the Go side
// downsampled it), so the page stays fast on a 60k-op run. When done it
// sets body[data-rendered]="ok", and errors land in body[data-errors]: a
// headless browser test reads both from the DOM.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var LABEL = 170, RIGHT = 24, HL = 16, OL = 9, ROW = 15, AXIS = 20, CHART = 96;
  var FAULT_COLORS = {
    "kill": "#d62728", "stop": "#c44e52", "pause": "#9467bd", "partition": "#1f77b4",
    "one-way": "#17becf", "isolate-leader": "#2ca02c", "power-loss": "#8c564b",
    "restart": "#e377c2", "latency": "#bcbd22", "part-kill": "#ff7f0e"
  };

  function el(name, attrs, parent, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function title(parent, text) { el("title", {}, parent, text); }
  function fmtT(ms) {
    var s = ms / 1000, neg = s < 0 ? "-" : "";
    s = Math.abs(s);
    if (s < 60) return neg + (Math.round(s * 10) / 10) + "s";
    var m = Math.floor(s / 60), r = Math.round(s - m * 60);
    return neg + m + ":" + (r < 10 ? "0" : "") + r;
  }
  function fmtD(ms) { return ms < 1000 ? ms + "ms" : (Math.round(ms / 100) / 10) + "s"; }
  function faultColor(f) { return FAULT_COLORS[f] || "#7f7f7f"; }
  function healthClass(code) { return code === 200 ? "h200" : code === 0 ? "h0" : "h503"; }

  function niceStep(span, px) {
    var target = span / Math.max(1, px / 90), p = Math.pow(10, Math.floor(Math.log10(target)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= target) return steps[i] * p;
    return 10 * p;
  }

  // packRows gives each interval the first row where it does not overlap
  // (labels of overlapping faults stack instead of colliding).
  function packRows(items, x0, x1) {
    var ends = [];
    return items.map(function (it) {
      var a = x0(it), b = x1(it);
      for (var r = 0; r < ends.length; r++) if (ends[r] <= a) { ends[r] = b; return r; }
      ends.push(b);
      return ends.length - 1;
    });
  }

  function draw(host, s) {
    var W = Math.max(900, (host.clientWidth || 1200) - 2), P = W - LABEL - RIGHT;
    var span = Math.max(1, s.t1 - s.t0);
    function x(ms) { return LABEL + (Math.min(Math.max(ms, s.t0), s.t1) - s.t0) / span * P; }
    function bandEnd(f) { return f.end >= 0 ? f.end : f.heal >= 0 ? f.heal : s.t1; }

    var faults = s.faults || [], health = s.health || [], lanes = s.lanes || [];
    var labelW = function (f) { return (f.fault + " " + (f.nodes || []).join(",")).length * 6.2 + 8; };
    var rows = packRows(faults, function (f) { return x(f.start); }, function (f) { return Math.max(x(bandEnd(f)), x(f.start) + labelW(f)); });
    var nRows = faults.length ? Math.max.apply(null, rows) + 1 : 0;

    var y = 4;
    var yFaults = y; y += nRows * ROW + (nRows ? 2 : 0);
    var yAxis = y; y += AXIS;
    var yHealth = y + (health.length ? 12 : 0); y = yHealth + health.length * HL;
    var yOps = y + (lanes.length ? 16 : 0); y = yOps + lanes.length * (OL + 2);
    var yBottom = y + 4;
    var hasRate = (s.rate || []).some(function (r) { return r[0] + r[1] + r[2] > 0; });
    var yRate = yBottom + 22, yLat = yRate + CHART + 26;
    var H = hasRate ? yLat + CHART + 24 : yBottom + 4;
    var yEnd = hasRate ? yLat + CHART : yBottom;

    // Drawn at the width the host had; scales with it if a scrollbar or a
    // resize changes it later.
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, "class": "timeline", style: "width:100%;height:auto" }, host);
    var defs = el("defs", {}, svg);
    var pat = el("pattern", { id: "hatch-" + s.id, width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" }, defs);
    el("rect", { width: 3, height: 6, fill: "#222", opacity: 0.55 }, pat);
    var gpat = el("pattern", { id: "gap-" + s.id, width: 5, height: 5, patternUnits: "userSpaceOnUse", patternTransform: "rotate(-45)" }, defs);
    el("rect", { width: 2, height: 5, fill: "#e6a100", opacity: 0.7 }, gpat);

    // Time axis and grid.
    var step = niceStep(span, P), g = el("g", { "class": "axis" }, svg);
    for (var t = Math.ceil(s.t0 / step) * step; t <= s.t1; t += step) {
      el("line", { x1: x(t), x2: x(t), y1: yAxis + 14, y2: yBottom, "class": "grid" }, g);
      el("text", { x: x(t), y: yAxis + 11, "text-anchor": "middle" }, g, fmtT(t));
    }

    // Lane labels and backgrounds.
    var lg = el("g", { "class": "lanes" }, svg);
    if (health.length) el("text", { x: 4, y: yHealth - 3, "class": "group" }, lg, "node /healthz");
    health.forEach(function (l, i) {
      var ly = yHealth + i * HL;
      el("rect", { x: LABEL, y: ly + 1, width: P, height: HL - 3, "class": "lanebg" }, lg);
      el("text", { x: LABEL - 6, y: ly + HL - 5, "text-anchor": "end" }, lg, l.name);
      var paths = { h200: "", h503: "", h0: "" };
      (l.segs || []).forEach(function (sg) {
        var a = x(sg[0]), b = Math.max(x(sg[1]), a + 1);
        paths[healthClass(sg[2])] += "M" + a.toFixed(1) + " " + (ly + 1) + "h" + (b - a).toFixed(1) + "v" + (HL - 3) + "h" + (a - b).toFixed(1) + "z";
      });
      for (var k in paths) if (paths[k]) el("path", { d: paths[k], "class": "health " + k }, lg);
    });
    var laneY = {};
    if (lanes.length) el("text", { x: 4, y: yOps - 4, "class": "group" }, lg, "client operations");
    var bw = P / 1200;
    lanes.forEach(function (l, i) {
      var ly = yOps + i * (OL + 2);
      laneY[l.name] = ly;
      el("rect", { x: LABEL, y: ly, width: P, height: OL, "class": "lanebg" }, lg);
      var t = el("text", { x: LABEL - 6, y: ly + OL - 1, "text-anchor": "end", "class": "small" }, lg, l.name);
      title(t, l.name + ": " + l.counts[0] + " ok, " + l.counts[1] + " failed, " + l.counts[2] + " unknown");
      ["ok", "failed", "unknown"].forEach(function (fate) {
        var d = "";
        (l[fate] || []).forEach(function (r) {
          d += "M" + (LABEL + r[0] * bw).toFixed(1) + " " + ly + "h" + Math.max(r[1] * bw, 0.8).toFixed(1) + "v" + OL + "h-" + Math.max(r[1] * bw, 0.8).toFixed(1) + "z";
        });
        if (d) el("path", { d: d, "class": "op " + fate }, lg);
      });
    });

    if (hasRate) drawCharts(svg, s, x, yRate, yLat, P);

    // Cut-off intervals over the node lanes.
    var hIndex = {};
    health.forEach(function (l, i) { hIndex[l.name] = i; });
    (s.cutoff || []).forEach(function (c) {
      if (!(c.lane in hIndex)) return;
      var r = el("rect", { x: x(c.from), y: yHealth + hIndex[c.lane] * HL + 1, width: Math.max(1, x(c.to) - x(c.from)), height: HL - 3, fill: "url(#hatch-" + s.id + ")", "class": "cutoff" }, svg);
      title(r, c.lane + " cut off from a majority " + fmtT(c.from) + "–" + fmtT(c.to) + (c.why ? " (" + c.why + ")" : ""));
    });

    // Failover gaps over the op lanes.
    (s.gaps || []).forEach(function (gp) {
      if (!lanes.length) return;
      var r = el("rect", { x: x(gp.from), y: yOps - 2, width: Math.max(1, x(gp.to) - x(gp.from)), height: lanes.length * (OL + 2) + 2, fill: "url(#gap-" + s.id + ")", "class": "gap" }, svg);
      title(r, "failover gap: no message received for " + fmtD(gp.to - gp.from) + " (" + fmtT(gp.from) + "–" + fmtT(gp.to) + ")");
      el("text", { x: (x(gp.from) + x(gp.to)) / 2, y: yBottom + 1, "text-anchor": "middle", "class": "gaplabel" }, svg, "gap " + fmtD(gp.to - gp.from));
    });

    // Fault bands: one group per injection, across every lane.
    faults.forEach(function (f, i) {
      var col = faultColor(f.fault), a = x(f.start), b = Math.max(x(bandEnd(f)), a + 2);
      var fg = el("g", { "class": "fault-band", "data-fault": f.fault }, svg);
      var text = f.fault + " " + (f.nodes || []).join(",");
      title(fg, text + "\ninject " + fmtT(f.start) + (f.injected >= 0 ? ", took effect " + fmtT(f.injected) : ", NEVER OBSERVED") +
        (f.heal >= 0 ? ", heal " + fmtT(f.heal) : ", never healed") + (f.end >= 0 ? ", healed " + fmtT(f.end) : "") + (f.error ? "\nerror: " + f.error : ""));
      el("rect", { x: a, y: yAxis + 14, width: b - a, height: yEnd - yAxis - 14, fill: col, opacity: 0.07 }, fg);
      var ia = f.injected >= 0 ? x(f.injected) : a, ib = f.heal >= 0 ? x(f.heal) : b;
      el("rect", { x: ia, y: yAxis + 14, width: Math.max(1, ib - ia), height: yEnd - yAxis - 14, fill: col, opacity: 0.1 }, fg);
      el("line", { x1: a, x2: a, y1: yFaults + rows[i] * ROW, y2: yEnd, stroke: col, "stroke-width": 1.2 }, fg);
      el("line", { x1: b, x2: b, y1: yFaults + rows[i] * ROW, y2: yEnd, stroke: col, "stroke-width": 1, "stroke-dasharray": "3 2" }, fg);
      var ly = yFaults + rows[i] * ROW;
      el("rect", { x: a, y: ly, width: Math.max(b - a, labelW(f)), height: ROW - 2, fill: col, rx: 2 }, fg);
      el("text", { x: a + 4, y: ly + ROW - 5, "class": "flabel" }, fg, text + (f.error ? " ⚠" : ""));
      (f.nodes || []).forEach(function (n) {
        if (n in hIndex) el("rect", { x: ia, y: yHealth + hIndex[n] * HL, width: Math.max(1, ib - ia), height: HL - 1, fill: "none", stroke: col, "stroke-width": 2, "class": "fault-node" }, fg);
      });
    });

    // Anomaly marks link into the implicated-ops table.
    (s.marks || []).forEach(function (m) {
      if (!(m.lane in laneY)) return;
      var a = el("a", { href: "#op-" + m.id }, svg);
      var cx = x(m.at), cy = laneY[m.lane];
      var p = el("path", { d: "M" + cx + " " + (cy + OL) + "l-5 -10h10z", "class": "mark" }, a);
      title(p, "op " + m.id + " — " + m.kind);
    });

    // Crosshair: the time under the pointer.
    var cross = el("line", { y1: yAxis + 14, y2: H - 18, "class": "cross", visibility: "hidden" }, svg);
    var ct = el("text", { y: yAxis + 11, "class": "crosst", visibility: "hidden" }, svg);
    svg.addEventListener("mousemove", function (ev) {
      var r = svg.getBoundingClientRect(), px = (ev.clientX - r.left) * W / r.width;
      if (px < LABEL || px > LABEL + P) { cross.setAttribute("visibility", "hidden"); ct.setAttribute("visibility", "hidden"); return; }
      var ms = s.t0 + (px - LABEL) / P * span, sec = Math.floor((ms - s.t0) / 1000), txt = fmtT(ms);
      if (hasRate && s.rate[sec]) {
        var rr = s.rate[sec], lt = s.lat[sec];
        txt += "  " + (rr[0] + rr[1] + rr[2]) + " ops/s (" + rr[1] + " failed, " + rr[2] + " unknown)" + (lt && lt[0] >= 0 ? "  publish p50 " + fmtD(lt[0]) + " p99 " + fmtD(lt[1]) : "");
      }
      cross.setAttribute("x1", px); cross.setAttribute("x2", px); cross.setAttribute("visibility", "visible");
      ct.setAttribute("x", Math.min(px + 4, W - 420)); ct.textContent = txt; ct.setAttribute("visibility", "visible");
    });
  }

  function drawCharts(svg, s, x, yRate, yLat, P) {
    var rate = s.rate, n = rate.length, g = el("g", { "class": "charts" }, svg);
    function sx(i) { return x(s.t0 + i * 1000); }
    // Stacked rate: ok at the bottom, then failed, then unknown.
    var maxR = 1;
    rate.forEach(function (r) { maxR = Math.max(maxR, r[0] + r[1] + r[2]); });
    function ry(v) { return yRate + CHART - v / maxR * CHART; }
    el("text", { x: 4, y: yRate - 6, "class": "group" }, g, "ops/s (completed)");
    el("rect", { x: LABEL, y: yRate, width: P, height: CHART, "class": "lanebg" }, g);
    el("text", { x: LABEL - 6, y: yRate + 9, "text-anchor": "end", "class": "small" }, g, String(maxR));
    el("text", { x: LABEL - 6, y: yRate + CHART, "text-anchor": "end", "class": "small" }, g, "0");
    ["ok", "failed", "unknown"].forEach(function (fate, k) {
      var top = "", bot = [];
      for (var i = 0; i < n; i++) {
        var lo = 0; for (var j = 0; j < k; j++) lo += rate[i][j];
        var hi = lo + rate[i][k];
        top += (i ? "L" : "M") + sx(i).toFixed(1) + " " + ry(hi).toFixed(1) + "L" + sx(i + 1).toFixed(1) + " " + ry(hi).toFixed(1);
        bot.push(sx(i).toFixed(1) + " " + ry(lo).toFixed(1), sx(i + 1).toFixed(1) + " " + ry(lo).toFixed(1));
      }
      bot.reverse();
      el("path", { d: top + "L" + bot.join("L") + "z", "class": "area " + fate }, g);
    });
    // Latency, log scale: publish ack p50/p99/max, publish→receive p50/p99.
    var maxL = 10;
    s.lat.forEach(function (l) { maxL = Math.max(maxL, l[2]); });
    s.deliver.forEach(function (l) { maxL = Math.max(maxL, l[1]); });
    var lmax = Math.log10(maxL + 1);
    function ly(v) { return yLat + CHART - Math.log10(v + 1) / lmax * CHART; }
    el("text", { x: 4, y: yLat - 6, "class": "group" }, g, "latency (log)");
    el("rect", { x: LABEL, y: yLat, width: P, height: CHART, "class": "lanebg" }, g);
    [1, 10, 100, 1000, 10000, 100000].forEach(function (v) {
      if (v > maxL * 1.5) return;
      el("line", { x1: LABEL, x2: LABEL + P, y1: ly(v), y2: ly(v), "class": "grid" }, g);
      el("text", { x: LABEL - 6, y: ly(v) + 4, "text-anchor": "end", "class": "small" }, g, fmtD(v));
    });
    function line(arr, idx, cls) {
      var d = "", pen = false;
      for (var i = 0; i < arr.length; i++) {
        var v = arr[i][idx];
        if (v < 0) { pen = false; continue; }
        d += (pen ? "L" : "M") + (sx(i) + 500 / (s.t1 - s.t0) * P).toFixed(1) + " " + ly(v).toFixed(1);
        pen = true;
      }
      if (d) el("path", { d: d, "class": "lat " + cls }, g);
    }
    line(s.lat, 2, "lmax"); line(s.lat, 1, "p99"); line(s.lat, 0, "p50");
    line(s.deliver, 1, "d99"); line(s.deliver, 0, "d50");
    var lg = el("g", { "class": "small" }, g), lx = LABEL + 8;
    [["p50", "publish ack p50"], ["p99", "publish ack p99"], ["lmax", "publish ack max"], ["d50", "publish→receive p50"], ["d99", "publish→receive p99"]].forEach(function (it) {
      el("line", { x1: lx, x2: lx + 16, y1: yLat + CHART + 14, y2: yLat + CHART + 14, "class": "lat " + it[0] }, lg);
      el("text", { x: lx + 20, y: yLat + CHART + 18 }, lg, it[1]);
      lx += 40 + it[1].length * 6;
    });
  }

  function main() {
    var data = JSON.parse(document.getElementById("data").textContent || "{}");
    var byID = {};
    (data.sections || []).forEach(function (s) { byID[s.id] = s; });
    var hosts = document.querySelectorAll(".tl[data-section]");
    for (var i = 0; i < hosts.length; i++) {
      var s = byID[hosts[i].dataset.section];
      if (s) draw(hosts[i], s);
    }
  }

  try {
    var t0 = performance.now();
    main();
    document.body.dataset.renderMs = Math.round(performance.now() - t0);
    document.body.dataset.rendered = window.__errors.length ? "errors" : "ok";
  } catch (e) {
    window.__errors.push(String(e && e.stack || e));
    document.body.dataset.rendered = "failed";
  }
  if (window.__errors.length) document.body.dataset.errors = window.__errors.join(" | ");
})();
