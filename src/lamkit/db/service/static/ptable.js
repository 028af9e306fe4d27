// Periodic-table element picker of the crystal database page: a button per element laid out
// by period and group (lanthanides and actinides in two rows below). Picked elements go into
// the search form's "Elements (all of)" or "Only elements" field.
"use strict";

const PeriodicTable = (() => {
  const SYMBOLS = ("H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni " +
    "Cu Zn Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce " +
    "Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra " +
    "Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og")
    .split(" ");

  // [row, column] (1-based grid lines) of atomic number z
  function place(z) {
    if (z === 1) return [1, 1];
    if (z === 2) return [1, 18];
    const starts = [[3, 2], [11, 3], [19, 4], [37, 5], [55, 6], [87, 7]];
    let period = 2;
    let first = 3;
    for (const [s, p] of starts) if (z >= s) { first = s; period = p; }
    const k = z - first;  // position within the period
    if (period <= 3) return [period, k < 2 ? k + 1 : k + 11];
    if (period <= 5) return [period, k + 1];
    // periods 6 and 7: s block, the f block in its own row (row 9 or 10), then groups 4..18
    if (k < 2) return [period, k + 1];
    if (k < 17) return [period + 3, k + 1];  // La..Lu / Ac..Lr under groups 3..17
    return [period, k - 13];
  }

  function build(container, onChange) {
    const picked = new Set();
    container.innerHTML = "";
    SYMBOLS.forEach((sym, i) => {
      const [row, col] = place(i + 1);
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = sym;
      b.title = `${sym} (Z = ${i + 1})`;
      b.dataset.el = sym;
      b.style.gridRow = String(row);
      b.style.gridColumn = String(col);
      b.addEventListener("click", () => {
        if (picked.has(sym)) picked.delete(sym); else picked.add(sym);
        b.classList.toggle("on", picked.has(sym));
        onChange([...picked]);
      });
      container.appendChild(b);
    });
    const gap = document.createElement("div");
    gap.className = "gap";
    gap.style.gridRow = "8";  // a gap row before the f block
    container.appendChild(gap);
    return {
      picked: () => SYMBOLS.filter((s) => picked.has(s)),
      set(symbols) {
        picked.clear();
        for (const s of symbols) if (SYMBOLS.includes(s)) picked.add(s);
        for (const b of container.querySelectorAll("button[data-el]")) {
          b.classList.toggle("on", picked.has(b.dataset.el));
        }
        onChange([...picked]);
      },
    };
  }

  return { SYMBOLS, place, build };
})();
