// Unit-cell picture on a <canvas>: atoms as shaded discs (Jmol colours, scaled covalent radii),
// cell edges, orthographic projection, rotation by dragging and zoom by the wheel.
// No libraries: atoms are painted back to front (painter's algorithm).
"use strict";

const CellViewer = (() => {
  const EDGES = [[0, 1], [0, 2], [0, 4], [1, 3], [1, 5], [2, 3], [2, 6], [3, 7], [4, 5], [4, 6],
    [5, 7], [6, 7]];
  const EPS = 1e-3;

  const matmul = (a, b) => a.map((row) => [0, 1, 2].map(
    (j) => row[0] * b[0][j] + row[1] * b[1][j] + row[2] * b[2][j]));
  const rotX = (t) => [[1, 0, 0], [0, Math.cos(t), -Math.sin(t)], [0, Math.sin(t), Math.cos(t)]];
  const rotY = (t) => [[Math.cos(t), 0, Math.sin(t)], [0, 1, 0], [-Math.sin(t), 0, Math.cos(t)]];
  const apply = (m, v) => [0, 1, 2].map((i) => m[i][0] * v[0] + m[i][1] * v[1] + m[i][2] * v[2]);
  const toCart = (lat, f) => [0, 1, 2].map(
    (k) => f[0] * lat[0][k] + f[1] * lat[1][k] + f[2] * lat[2][k]);

  function shade(hex, factor) {
    const n = parseInt(hex.slice(1), 16);
    const ch = [(n >> 16) & 255, (n >> 8) & 255, n & 255].map(
      (c) => Math.max(0, Math.min(255, Math.round(factor >= 1 ? c + (255 - c) * (factor - 1)
        : c * factor))));
    return `rgb(${ch[0]},${ch[1]},${ch[2]})`;
  }

  // atoms inside [0, n) of the (super)cell plus their images on the faces, edges and corners
  function atomsOf(record, n) {
    const lat = record.lattice.matrix;
    const out = [];
    for (const site of record.sites) {
      const f0 = site.frac_coords.map((x) => x - Math.floor(x + EPS));  // wrap to [0, 1)
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) {
        const base = [f0[0] + i, f0[1] + j, f0[2] + k];
        const shifts = [[0], [0], [0]];
        for (let d = 0; d < 3; d++) if (Math.abs(base[d]) < EPS) shifts[d].push(n);
        for (const a of shifts[0]) for (const b of shifts[1]) for (const c of shifts[2]) {
          const f = [base[0] + a, base[1] + b, base[2] + c];
          out.push({ species: site.species, xyz: toCart(lat, f), index: site.index });
        }
      }
    }
    return out;
  }

  function corners(lat, n) {
    const out = [];
    for (let c = 0; c < 8; c++) {
      out.push(toCart(lat, [(c & 1) ? n : 0, (c & 2) ? n : 0, (c & 4) ? n : 0]));
    }
    return out;
  }

  class Viewer {
    constructor(canvas) {
      this.canvas = canvas;
      this.ctx = canvas.getContext("2d");
      this.record = null;
      this.supercell = 1;
      this.reset();
      this._bind();
    }

    reset() {
      this.rot = matmul(rotX(-0.35), rotY(0.55));
      this.zoom = 1;
      if (this.record) this.draw();
    }

    show(record) {
      this.record = record;
      this.draw();
    }

    setSupercell(n) {
      this.supercell = n;
      this.draw();
    }

    _bind() {
      let last = null;
      const c = this.canvas;
      c.addEventListener("pointerdown", (e) => {
        last = [e.clientX, e.clientY];
        c.setPointerCapture(e.pointerId);
        c.style.cursor = "grabbing";
      });
      c.addEventListener("pointermove", (e) => {
        if (!last) return;
        const dx = e.clientX - last[0];
        const dy = e.clientY - last[1];
        last = [e.clientX, e.clientY];
        this.rot = matmul(matmul(rotY(dx * 0.01), rotX(dy * 0.01)), this.rot);
        this.draw();
      });
      const stop = () => { last = null; c.style.cursor = "grab"; };
      c.addEventListener("pointerup", stop);
      c.addEventListener("pointercancel", stop);
      c.addEventListener("wheel", (e) => {
        e.preventDefault();
        this.zoom = Math.max(0.3, Math.min(5, this.zoom * Math.exp(-e.deltaY * 0.001)));
        this.draw();
      }, { passive: false });
    }

    draw() {
      const { ctx, canvas, record } = this;
      const dpr = window.devicePixelRatio || 1;
      const w = canvas.clientWidth || canvas.width;
      const h = canvas.clientHeight || canvas.height;
      if (canvas.width !== Math.round(w * dpr)) {
        canvas.width = Math.round(w * dpr);
        canvas.height = Math.round(h * dpr);
      }
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      if (!record) return;
      const n = this.supercell;
      const lat = record.lattice.matrix;
      const cs = corners(lat, n);
      const centre = [0, 1, 2].map((k) => cs.reduce((s, p) => s + p[k], 0) / 8);
      const rel = (p) => apply(this.rot, [p[0] - centre[0], p[1] - centre[1], p[2] - centre[2]]);
      const styles = record.styles || {};
      const radius = (sym) => 0.45 * ((styles[sym] && styles[sym].radius) || 1.0);
      const atoms = atomsOf(record, n).map((a) => ({ ...a, p: rel(a.xyz) }));
      const rc = cs.map(rel);
      // fit the projected cell and atoms into the canvas
      let ext = 1e-6;
      for (const p of rc) ext = Math.max(ext, Math.abs(p[0]), Math.abs(p[1]));
      for (const a of atoms) {
        ext = Math.max(ext, Math.abs(a.p[0]) + radius(a.species), Math.abs(a.p[1]) + radius(a.species));
      }
      const scale = (0.46 * Math.min(w, h) / ext) * this.zoom;
      const sx = (p) => w / 2 + p[0] * scale;
      const sy = (p) => h / 2 - p[1] * scale;
      // cell edges split into back and front halves around the atoms
      const edges = EDGES.map(([i, j]) => ({ a: rc[i], b: rc[j], z: (rc[i][2] + rc[j][2]) / 2 }));
      const drawEdges = (list, alpha) => {
        ctx.strokeStyle = `rgba(40,50,70,${alpha})`;
        ctx.lineWidth = 1.3;
        ctx.beginPath();
        for (const e of list) {
          ctx.moveTo(sx(e.a), sy(e.a));
          ctx.lineTo(sx(e.b), sy(e.b));
        }
        ctx.stroke();
      };
      drawEdges(edges.filter((e) => e.z < 0), 0.45);
      atoms.sort((u, v) => u.p[2] - v.p[2]);
      for (const a of atoms) {
        const color = (styles[a.species] && styles[a.species].color) || "#999999";
        const r = Math.max(2, radius(a.species) * scale);
        const x = sx(a.p);
        const y = sy(a.p);
        const g = ctx.createRadialGradient(x - r * 0.35, y - r * 0.35, r * 0.1, x, y, r);
        g.addColorStop(0, shade(color, 1.55));
        g.addColorStop(0.55, color);
        g.addColorStop(1, shade(color, 0.55));
        ctx.fillStyle = g;
        ctx.beginPath();
        ctx.arc(x, y, r, 0, 2 * Math.PI);
        ctx.fill();
        ctx.strokeStyle = "rgba(0,0,0,0.35)";
        ctx.lineWidth = 0.8;
        ctx.stroke();
      }
      drawEdges(edges.filter((e) => e.z >= 0), 0.85);
      this._axes(w, h);
      canvas.dataset.atomsDrawn = String(atoms.length);
    }

    // a, b, c directions in the corner
    _axes(w, h) {
      const { ctx } = this;
      const lat = this.record.lattice.matrix;
      const o = [34, h - 30];
      ["a", "b", "c"].forEach((name, k) => {
        const v = apply(this.rot, lat[k]);
        const len = Math.hypot(v[0], v[1], v[2]) || 1;
        const end = [o[0] + (v[0] / len) * 22, o[1] - (v[1] / len) * 22];
        ctx.strokeStyle = ["#c0392b", "#27ae60", "#2457c5"][k];
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.moveTo(o[0], o[1]);
        ctx.lineTo(end[0], end[1]);
        ctx.stroke();
        ctx.fillStyle = ctx.strokeStyle;
        ctx.font = "12px sans-serif";
        ctx.fillText(name, end[0] + 3, end[1] + 4);
      });
    }
  }

  return { Viewer };
})();
