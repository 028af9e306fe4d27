// The web page of the lamkit crystal database: search form, paged results, record detail.
// State lives in the URL hash ("#search?elements=Na,Cl" or "#structure/12") so the back button
// and bookmarks work. Talks to the JSON API under /api/v1 only.
"use strict";

(() => {
  const API = "/api/v1";
  const $ = (id) => document.getElementById(id);
  const FIELDS = ["elements", "only_elements", "chemsys", "formula", "spacegroup", "e_min",
    "e_max", "e_above_hull_max", "nsites_min", "nsites_max", "submitter", "submitted_from",
    "submitted_to", "model", "order_by", "limit"];
  // a bare date (YYYY-MM-DD) as "submitted to" means the whole day: the API's bound is
  // inclusive and a date alone is its first instant (UTC)
  const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;
  const viewer = new CellViewer.Viewer($("structure-canvas"));
  // cursors[i] is the cursor that fetches page i (null for the first page)
  let paging = { query: null, cursors: [null], page: 0, next: null };
  // finished searches and hull plots, on <body data-searches> / <body data-hulls>: lets
  // scripts and tests wait for an answer
  let searches = 0;
  let hulls = 0;
  let record = null;  // the record on show

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
      if (q.has(name)) {
        if (el.tagName === "SELECT") ensureOption(el, q.get(name));
        el.value = q.get(name);
      }
      else if (el.tagName === "SELECT") el.selectedIndex = name === "limit" ? 1 : 0;
      else el.value = "";
    }
  }

  // a <select> offers every value set on it (a sort key from a column head, a model of a link)
  function ensureOption(select, value, text) {
    if ([...select.options].some((o) => o.value === value)) return;
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text || value;
    select.appendChild(o);
  }

  function markSorted(order) {
    const key = order.replace(/^-/, "");
    for (const th of document.querySelectorAll("#results th[data-sort]")) {
      th.classList.toggle("sorted-asc", th.dataset.sort === key && !order.startsWith("-"));
      th.classList.toggle("sorted-desc", th.dataset.sort === key && order.startsWith("-"));
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
    $("prev-page").disabled = paging.page === 0;
    markSorted(field("order_by").value || "id");
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
    const C = r.conventional;
    const CL = C ? C.lattice : null;
    kv($("conventional-table"), CL ? [
      ["a, b, c (Å)", `${fmt(CL.a, 4)}, ${fmt(CL.b, 4)}, ${fmt(CL.c, 4)}`],
      ["α, β, γ (°)", `${fmt(CL.alpha, 2)}, ${fmt(CL.beta, 2)}, ${fmt(CL.gamma, 2)}`],
      ["volume (Å³)", fmt(CL.volume, 3)],
      ["sites", C.nsites],
    ] : [["–", "the cell could not be analysed"]]);
    record = r;
    $("view-conventional").disabled = !C;
    $("view-conventional").checked = false;
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
      ["phase diagram", r.energy !== null && r.chemsys
        ? `<a href="#" id="detail-hull">${esc(r.chemsys)}${r.model ? ` (${esc(r.model)})` : ""}</a>`
        : "–"],
    ]);
    const link = $("detail-hull");
    if (link) {
      link.addEventListener("click", (e) => {
        e.preventDefault();
        $("h-chemsys").value = r.chemsys;
        if (r.model) {
          ensureOption($("h-model"), r.model);
          $("h-model").value = r.model;
        }
        showHull(r.chemsys, r.model || "");
        $("hull-panel").scrollIntoView({ behavior: "instant", block: "start" });
      });
    }
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
  $("prev-page").addEventListener("click", () => {
    if (paging.page > 0) go(new URLSearchParams(paging.query), paging.page - 1);
  });
  for (const th of document.querySelectorAll("#results th[data-sort]")) {
    th.title = "Sort by this column (again: reverse)";
    th.addEventListener("click", () => {
      const select = field("order_by");
      const now = select.value || "id";
      const key = th.dataset.sort;
      const order = now === key ? `-${key}` : key;
      ensureOption(select, order, `${key} ${order.startsWith("-") ? "↓" : "↑"}`);
      select.value = order;
      paging.query = null;
      go(formQuery(), 0);
    });
  }
  $("view-conventional").addEventListener("change", (e) => {
    if (!record) return;
    const c = record.conventional;
    viewer.show(e.target.checked && c ? { ...record, lattice: c.lattice, sites: c.sites } : record);
  });
  $("close-detail").addEventListener("click", () => go(new URLSearchParams(paging.query || ""),
    paging.page));
  $("view-reset").addEventListener("click", () => viewer.reset());
  $("view-supercell").addEventListener("change", (e) => viewer.setSupercell(e.target.checked ? 2 : 1));
  window.addEventListener("hashchange", route);

  // ------------------------------------------------------------------ element picker
  const picker = PeriodicTable.build($("ptable"), (els) => {
    $("pt-picked").textContent = els.length ? `picked: ${els.join(", ")}` : "";
  });
  $("pt-apply").addEventListener("click", () => {
    const mode = $("pt-only").checked ? "only_elements" : "elements";
    field(mode).value = picker.picked().join(",");
    field(mode === "elements" ? "only_elements" : "elements").value = "";
    paging.query = null;
    go(formQuery(), 0);
  });
  $("pt-clear").addEventListener("click", () => picker.set([]));

  // ------------------------------------------------------------------ phase diagram
  async function showHull(chemsys, model) {
    if (!chemsys) {
      $("hull-message").textContent = "Type a chemical system first, e.g. Cu-Au or Li-Fe-O.";
      $("hull-message").classList.add("error");
      document.body.dataset.hulls = String(++hulls);
      return;
    }
    const q = model ? `?model=${encodeURIComponent(model)}` : "";
    $("hull-message").textContent = "Building the hull…";
    $("hull-message").classList.remove("error");
    $("hull-button").disabled = true;
    try {
      const h = await getJSON(`${API}/hull/${encodeURIComponent(chemsys)}${q}`);
      const n = HullPlot.draw($("hull-plot"), h.plot);
      $("hull-message").textContent = `${h.chemsys}, model ${h.model ?? "–"}: ${n} entries, ` +
        `${h.stable.length} on the hull.`;
      $("hull-plot").dataset.chemsys = h.chemsys;
      $("hull-plot").dataset.model = h.model ?? "";
      const rows = [...h.entries].sort((a, b) => (a.e_above_hull ?? 0) - (b.e_above_hull ?? 0));
      $("hull-table").querySelector("tbody").innerHTML = rows.map((e) =>
        `<tr data-id="${e.id}"><td><a href="#structure/${e.id}">${e.id}</a></td>` +
        `<td>${esc(e.formula)}</td><td class="num">${fmt(e.formation_energy_per_atom, 4)}</td>` +
        `<td class="num${e.stable ? " stable" : ""}">${fmt(e.e_above_hull, 4)}</td></tr>`).join("");
    } catch (err) {
      $("hull-plot").innerHTML = "";
      $("hull-plot").dataset.points = "0";
      $("hull-table").querySelector("tbody").innerHTML = "";
      $("hull-message").textContent = `No hull: ${err.message}`;
      $("hull-message").classList.add("error");
    } finally {
      $("hull-button").disabled = false;
      document.body.dataset.hulls = String(++hulls);
    }
  }
  $("hull-form").addEventListener("submit", (e) => {
    e.preventDefault();
    showHull($("h-chemsys").value.trim(), $("h-model").value);
  });
  $("h-model").addEventListener("change", () => {
    if ($("h-chemsys").value.trim()) showHull($("h-chemsys").value.trim(), $("h-model").value);
  });
  $("hull-plot").addEventListener("mouseover", (e) => {
    const c = e.target.closest("circle.hull-point");
    if (!c) return;
    $("hull-info").textContent = c.querySelector("title").textContent;
    for (const tr of $("hull-table").querySelectorAll("tbody tr")) {
      tr.classList.toggle("on", tr.dataset.id === c.dataset.id);
    }
  });
  $("hull-plot").addEventListener("click", (e) => {
    const c = e.target.closest("circle.hull-point");
    if (c) location.hash = `structure/${c.dataset.id}`;
  });

  // ------------------------------------------------------------------ start
  async function start() {
    try {
      const s = await getJSON(`${API}/stats`);
      $("db-stats").textContent = `${s.records} structures · ${s.chemsys} chemical systems`;
      const models = Object.entries(s.by_model || {}).sort((a, b) => b[1] - a[1]);
      for (const [name, n] of models) {
        ensureOption(field("model"), name, `${name} (${n})`);
        ensureOption($("h-model"), name, `${name} (${n})`);
      }
    } catch (_) { /* the header stays empty; searches still work */ }
    await route();
  }
  start();
})();
