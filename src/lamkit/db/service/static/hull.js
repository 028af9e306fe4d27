// Convex-hull phase diagram of the crystal database page, drawn as plain SVG from the
// "plot" part of GET /api/v1/hull/{chemsys}: binary (formation energy against the fraction of
// the second element, the hull as a line) and ternary (the composition triangle, stable points
// joined by the tie lines of the lower hull). Stable points are black; the others are coloured
// by their energy above the hull. Each point is a <circle data-id data-x data-y ...> with a
// <title>, so hovering shows the record and tests can read the points back.
"use strict";

const HullPlot = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 560;
  const H = 420;
  const PAD = { left: 62, right: 20, top: 46, bottom: 46 };

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  // energy above hull (eV/atom) -> colour from yellow (just above) to red (>= top)
  function colour(ehull, top) {
    const t = Math.max(0, Math.min(1, (ehull || 0) / (top || 1)));
    const hue = 55 - 55 * t;
    return `hsl(${hue.toFixed(0)}, 90%, ${(58 - 18 * t).toFixed(0)}%)`;
  }

  function label(p) {
    const e = p.e_above_hull === null || p.e_above_hull === undefined ? "–"
      : Number(p.e_above_hull).toFixed(4);
    return `id ${p.id} · ${p.formula} · E_hull ${e} eV/atom`;
  }

  function point(svg, p, cx, cy, top) {
    const c = el("circle", {
      cx: cx.toFixed(2), cy: cy.toFixed(2), r: p.stable ? 6 : 4.5,
      fill: p.stable ? "#1d2433" : colour(p.e_above_hull, top),
      stroke: p.stable ? "#fff" : "#0006", "stroke-width": 1,
      class: p.stable ? "hull-point stable-point" : "hull-point",
    }, svg);
    c.dataset.id = p.id;
    c.dataset.formula = p.formula;
    c.dataset.x = p.x;
    c.dataset.y = p.y;
    if (p.z !== undefined) c.dataset.z = p.z;
    c.dataset.ehull = p.e_above_hull;
    c.dataset.stable = p.stable ? "1" : "0";
    el("title", {}, c).textContent = label(p);
    return c;
  }

  function text(svg, x, y, s, attrs) {
    const t = el("text", { x, y, "font-size": 12, fill: "#1d2433", ...attrs }, svg);
    t.textContent = s;
    return t;
  }

  function niceTicks(lo, hi, n) {
    const step0 = (hi - lo) / n;
    const mag = 10 ** Math.floor(Math.log10(step0));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(+v.toFixed(10));
    return out;
  }

  function binary(svg, plot, top) {
    const pts = plot.points.filter((p) => p.y !== null && p.y !== undefined);
    let lo = Math.min(0, ...pts.map((p) => p.y));
    let hi = Math.max(0, ...pts.map((p) => p.y));
    const span = hi - lo || 1;
    lo -= 0.08 * span;
    hi += 0.08 * span;
    const sx = (x) => PAD.left + x * (W - PAD.left - PAD.right);
    const sy = (y) => PAD.top + (hi - y) / (hi - lo) * (H - PAD.top - PAD.bottom);
    el("rect", { x: PAD.left, y: PAD.top, width: W - PAD.left - PAD.right,
      height: H - PAD.top - PAD.bottom, fill: "#fbfcfe", stroke: "#d9dee8" }, svg);
    for (const v of niceTicks(lo, hi, 6)) {
      el("line", { x1: PAD.left, x2: W - PAD.right, y1: sy(v), y2: sy(v),
        stroke: v === 0 ? "#98a2b3" : "#eef0f4" }, svg);
      text(svg, PAD.left - 6, sy(v) + 4, v.toFixed(2), { "text-anchor": "end" });
    }
    for (let k = 0; k <= 4; k++) {
      text(svg, sx(k / 4), H - PAD.bottom + 16, (k / 4).toFixed(2), { "text-anchor": "middle" });
    }
    const [a, b] = plot.axes;
    text(svg, PAD.left, H - 8, a, { "font-weight": 600 });
    text(svg, W - PAD.right, H - 8, b, { "font-weight": 600, "text-anchor": "end" });
    text(svg, (PAD.left + W - PAD.right) / 2, H - 8, `fraction of ${b}`,
      { "text-anchor": "middle" });
    text(svg, 14, (PAD.top + H - PAD.bottom) / 2, "formation energy (eV/atom)", {
      "text-anchor": "middle", transform: `rotate(-90 14 ${(PAD.top + H - PAD.bottom) / 2})` });
    const line = (plot.hull || []).map(([x, y]) => `${sx(x).toFixed(2)},${sy(y).toFixed(2)}`);
    el("polyline", { points: line.join(" "), fill: "none", stroke: "#2457c5",
      "stroke-width": 2, class: "hull-line" }, svg);
    // unstable first, so that stable points are drawn on top
    for (const p of [...pts].sort((u, v) => u.stable - v.stable)) {
      point(svg, p, sx(p.x), sy(p.y), top);
    }
  }

  function ternary(svg, plot, top) {
    const size = Math.min(W - 80, (H - 60) / (Math.sqrt(3) / 2));
    const x0 = (W - size) / 2;
    const y0 = H - 34;
    const sx = (x) => x0 + x * size;
    const sy = (y) => y0 - y * size;
    const corners = [[0, 0], [1, 0], [0.5, Math.sqrt(3) / 2]];
    el("polygon", { points: corners.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" "),
      fill: "#fbfcfe", stroke: "#98a2b3", "stroke-width": 1.5 }, svg);
    const anchors = [["end", -8, 14], ["start", 8, 14], ["middle", 0, -8]];
    plot.axes.forEach((name, k) => {
      const [x, y] = corners[k];
      const [anchor, dx, dy] = anchors[k];
      text(svg, sx(x) + dx, sy(y) + dy, name, { "font-weight": 600, "text-anchor": anchor,
        "font-size": 14 });
    });
    for (const [[xa, ya], [xb, yb]] of plot.lines || []) {
      el("line", { x1: sx(xa), y1: sy(ya), x2: sx(xb), y2: sy(yb), stroke: "#2457c5",
        "stroke-width": 1.5, class: "hull-line" }, svg);
    }
    const pts = plot.points.filter((p) => p.z !== null && p.z !== undefined);
    for (const p of [...pts].sort((u, v) => u.stable - v.stable)) {
      point(svg, p, sx(p.x), sy(p.y), top);
    }
  }

  // key at the top left, above the plot: stable points, the colours of energies above hull
  function legend(svg, top) {
    const x = 12;
    const g = el("g", { class: "hull-legend" }, svg);
    el("circle", { cx: x + 6, cy: 12, r: 5, fill: "#1d2433" }, g);
    text(g, x + 16, 16, "on the hull", { "font-size": 11 });
    for (let k = 0; k < 5; k++) {
      el("rect", { x: x + k * 14, y: 24, width: 14, height: 9,
        fill: colour(top * (k + 0.5) / 5, top) }, g);
    }
    text(g, x + 76, 33, `E above hull 0–${top.toFixed(2)} eV/atom`, { "font-size": 11 });
  }

  // draw the "plot" of a hull answer into <svg>; returns the number of points drawn
  function draw(svg, plot) {
    svg.innerHTML = "";
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const tops = plot.points.map((p) => p.e_above_hull || 0);
    const top = Math.max(0.05, ...tops);
    if (plot.kind === "binary" || plot.kind === "ternary") {
      (plot.kind === "binary" ? binary : ternary)(svg, plot, top);
      legend(svg, top);
    } else {
      text(svg, W / 2, H / 2, "Only binary and ternary systems are drawn; see the table below.",
        { "text-anchor": "middle" });
    }
    const n = svg.querySelectorAll("circle.hull-point").length;
    svg.dataset.points = String(n);
    return n;
  }

  return { draw, colour, label };
})();
