// The web page of the lamkit crystal database: search form, paged results, record detail.
// State lives in the URL hash ("#search?elements=Na,Cl" or "#structure/12") so the back button
// and bookmarks work. Talks to the JSON API under /api/v1 only.
"use strict";

(() => {
  const API = "/api/v1";
  const $ = (id) => document.getElementById(id);
  const FIELDS = ["elements", "only_elements", "chemsys", "formula", "spacegroup", "e_min",
    "e_max", "e_above_hull_max", "nsites_min", "nsites_max", "submitter", "submitted_from",
    "submitted_to", "order_by", "limit"];
  // a bare date (YYYY-MM-DD) as "submitted to" means the whole day: the API's bound is
  // inclusive and a date alone is its first instant (UTC)
  const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;
  const viewer = new CellViewer.Viewer($("structure-canvas"));
  // cursors[i] is the cursor that fetches page i (null for the first page)
  let paging = { query: null, cursors: [null], page: 0, next: null };
  // finished searches, on <body data-searches>: lets scripts and tests wait for an answer
  let searches = 0;

  // a search form field by name (not form.elements[...]: the input named "elements" shadows
  // the form's own .elements property)
  const field = (name) => $("search-form").querySelector(`[name="${name}"]`);
  const fmt = (x, digits = 3) => (x === null || x === undefined || Number.isNaN(x) ? "–"
    : Number(x).toFixed(digits));
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" }[c]));

  function message(text, isError = false) {
    const m = $("message");
    m.textContent = text;
    m.classList.toggle("error", isError);
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const detail = body && body.detail ? body.detail : response.statusText;
      throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return body;
  }

  // ------------------------------------------------------------------ search
  function formQuery() {
    const q = new URLSearchParams();
    for (const name of FIELDS) {
      const el = field(name);
      const value = el ? el.value.trim() : "";
      if (value !== "" && !(name === "order_by" && value === "id")) q.set(name, value);
    }
    return q;
  }

  function fillForm(q) {
    for (const name of FIELDS) {
      const el = field(name);
      if (!el) continue;
      if (q.has(name)) el.value = q.get(name);
      else if (el.tagName === "SELECT") el.selectedIndex = name === "limit" ? 1 : 0;
      else el.value = "";
    }
  }

  async function runSearch(q, page) {
    const key = q.toString();
    if (paging.query !== key) paging = { query: key, cursors: [null], page: 0, next: null };
    paging.page = page;
    const params = new URLSearchParams(q);
    if (!params.has("limit")) params.set("limit", "25");
    const to = params.get("submitted_to");
    if (to && DATE_ONLY.test(to)) params.set("submitted_to", `${to}T23:59:59.999999Z`);
    const cursor = paging.cursors[page];
    if (cursor) params.set("cursor", cursor);
    if (page === 0) params.set("count", "true");
    message("Searching…");
    $("search-button").disabled = true;
    try {
      const data = await getJSON(`${API}/structures?${params}`);
      paging.next = data.next_cursor;
      if (data.next_cursor) paging.cursors[page + 1] = data.next_cursor;
      if (data.count !== null && data.count !== undefined) paging.count = data.count;
      showResults(data);
    } catch (err) {
      $("results").classList.add("hidden");
      $("pager").classList.add("hidden");
      message(`Search failed: ${err.message}`, true);
    } finally {
      $("search-button").disabled = false;
      document.body.dataset.searches = String(++searches);
    }
  }

  function showResults(data) {
    const body = $("results-body");
    body.innerHTML = "";
    for (const r of data.records) {
      const tr = document.createElement("tr");
      tr.dataset.id = r.id;
      const onHull = r.e_above_hull !== null && Math.abs(r.e_above_hull) < 1e-6;
      tr.innerHTML = `<td>${r.id}</td><td>${esc(r.formula)}</td>` +
        `<td>${esc(r.spacegroup_symbol ?? "–")} (${r.spacegroup_number ?? "?"})</td>` +
        `<td class="num">${r.nsites}</td><td class="num">${fmt(r.energy_per_atom, 4)}</td>` +
        `<td class="num">${fmt(r.formation_energy_per_atom, 4)}</td>` +
        `<td class="num${onHull ? " stable" : ""}">${fmt(r.e_above_hull, 4)}</td>` +
        `<td>${esc(r.model ?? "")}</td><td>${esc(r.submitter ?? "")}</td>`;
      tr.addEventListener("click", () => { location.hash = `structure/${r.id}`; });
      body.appendChild(tr);
    }
    const n = data.records.length;
    const first = paging.page * data.limit;
    $("results").classList.toggle("hidden", n === 0);
    $("pager").classList.toggle("hidden", n === 0);
    const total = paging.count !== undefined ? ` of ${paging.count}` : "";
    message(n === 0 ? "No structure matches these filters."
      : `Showing ${first + 1}–${first + n}${total} structures.`);
    $("page-info").textContent = `page ${paging.page + 1}`;
    $("next-page").disabled = !data.next_cursor;
    $("first-page").disabled = paging.page === 0;
  }

  // ------------------------------------------------------------------ detail
  function kv(table, rows) {
    table.innerHTML = rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("");
  }

  async function showDetail(id) {
    $("detail-panel").classList.remove("hidden");
    $("detail-title").textContent = `Loading record ${id}…`;
    let r;
    try {
      r = await getJSON(`${API}/structures/${encodeURIComponent(id)}`);
    } catch (err) {
      $("detail-body").classList.add("hidden");  // nothing of another record stays on show
      $("detail-title").textContent = `Record ${id}: ${err.message}`;
      return;
    }
    $("detail-body").classList.remove("hidden");
    for (const tr of $("results-body").children) {
      tr.classList.toggle("selected", tr.dataset.id === String(r.id));
    }
    $("detail-title").textContent = `${r.formula} · ${r.spacegroup_symbol ?? "?"} · id ${r.id}`;
    const L = r.lattice;
    kv($("lattice-table"), [
      ["a, b, c (Å)", `${fmt(L.a, 4)}, ${fmt(L.b, 4)}, ${fmt(L.c, 4)}`],
      ["α, β, γ (°)", `${fmt(L.alpha, 2)}, ${fmt(L.beta, 2)}, ${fmt(L.gamma, 2)}`],
      ["volume (Å³)", fmt(r.volume, 3)],
      ["density (g/cm³)", fmt(r.density, 3)],
      ["sites", r.nsites],
    ]);
    const S = r.symmetry;
    kv($("symmetry-table"), [
      ["space group", `${esc(S.symbol ?? "–")} (No. ${S.number ?? "?"})`],
      ["crystal system", esc(S.crystal_system ?? "–")],
      ["point group", esc(S.point_group ?? "–")],
      ["Hall symbol", esc(S.hall ?? "–")],
    ]);
    const onHull = r.e_above_hull !== null && Math.abs(r.e_above_hull) < 1e-6;
    kv($("energy-table"), [
      ["total energy (eV)", fmt(r.energy, 4)],
      ["energy per atom (eV/atom)", fmt(r.energy_per_atom, 4)],
      ["formation energy (eV/atom)", fmt(r.formation_energy_per_atom, 4)],
      ["E above hull (eV/atom)", `<span id="ehull-value" class="${onHull ? "stable" : ""}">` +
        `${fmt(r.e_above_hull, 4)}</span>${onHull ? " (on the hull)" : ""}`],
      ["model", esc(r.model ?? "–")],
    ]);
    const parts = r.decomposition || [];
    $("decomposition").innerHTML = parts.length && !onHull
      ? `<p class="small">Decomposes into ${parts.map((p) => `${fmt(p.fraction, 3)} × ` +
        (p.id ? `<a href="#structure/${p.id}">${esc(p.formula)}</a>` : esc(p.formula))).join(" + ")}` +
        " (atom fractions)</p>"
      : "";
    kv($("provenance-table"), [
      ["submitter", esc(r.submitter ?? "–")],
      ["submitted", esc(r.submitted ?? "–")],
      ["source", esc(r.source ?? "–")],
      ["tags", esc((r.tags || []).join(", ") || "–")],
    ]);
    const rows = r.sites.map((s) => `<tr><td>${s.index}</td><td>${esc(s.species)}</td>` +
      `<td>${esc(s.wyckoff ?? "–")}</td>` +
      s.frac_coords.map((x) => `<td class="num">${fmt(x, 5)}</td>`).join("") + "</tr>");
    $("sites-table").querySelector("tbody").innerHTML = rows.join("");
    $("legend").innerHTML = Object.entries(r.styles || {}).map(([el, st]) =>
      `<span><i style="background:${esc(st.color)}"></i>${esc(el)}</span>`).join("");
    $("downloads").innerHTML = "Download: " + Object.entries(r.downloads).map(([f, url]) =>
      `<a href="${esc(url)}" download>${f.toUpperCase()}</a>`).join("");
    viewer.show(r);
    $("detail-panel").scrollIntoView({ behavior: "instant", block: "start" });
  }

  // ------------------------------------------------------------------ routing
  async function route() {
    const hash = decodeURIComponent(location.hash.replace(/^#/, ""));
    const m = hash.match(/^structure\/(\d+)$/);
    if (m) {
      if (paging.query === null) await runSearch(new URLSearchParams(), 0);
      await showDetail(m[1]);
      return;
    }
    $("detail-panel").classList.add("hidden");
    const q = new URLSearchParams(hash.startsWith("search?") ? hash.slice(7) : "");
    const page = Number(q.get("page") || 0);
    q.delete("page");
    fillForm(q);
    await runSearch(q, Number.isInteger(page) && page >= 0 && page < paging.cursors.length
      && paging.query === q.toString() ? page : 0);
  }

  function go(q, page) {
    const p = new URLSearchParams(q);
    if (page) p.set("page", String(page));
    const target = `#search?${p}`;
    if (location.hash === target) route(); else location.hash = target;
  }

  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    paging.query = null;
    go(formQuery(), 0);
  });
  $("search-form").addEventListener("reset", () => setTimeout(() => go(new URLSearchParams(), 0)));
  $("next-page").addEventListener("click", () => {
    if (paging.next) go(new URLSearchParams(paging.query), paging.page + 1);
  });
  $("first-page").addEventListener("click", () => go(new URLSearchParams(paging.query), 0));
  $("close-detail").addEventListener("click", () => go(new URLSearchParams(paging.query || ""),
    paging.page));
  $("view-reset").addEventListener("click", () => viewer.reset());
  $("view-supercell").addEventListener("change", (e) => viewer.setSupercell(e.target.checked ? 2 : 1));
  window.addEventListener("hashchange", route);

  getJSON(`${API}/stats`).then((s) => {
    $("db-stats").textContent = `${s.records} structures · ${s.chemsys} chemical systems`;
  }).catch(() => {});
  route();
})();
