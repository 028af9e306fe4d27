"""The web page's phase diagram, element picker, model selector, sortable columns, paging,
conventional cell and offline API docs, in headless Chromium (as tests/test_db_web.py: selenium
and Debian's chromedriver; skipped without them, failing instead under CI=true).

The database holds Cu-Au(-Ni) crystals of two models whose hulls differ by hand: model "A" has
Cu3Au on the hull and CuAu 0.0167 eV/atom above it, model "B" the other way round; a ternary
Cu-Au-Ni of model "A" has an interior stable point. The plot's circles are read back from the SVG
and compared with the API's hull answer.
Set LAMKIT_TEST_SCREENSHOTS=docs to write the docs' pictures (docs/db-page-*.png).
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from lamkit.db import CrystalDB
from lamkit.db.service import create_app

from .db_browser import browser, console_errors, listed_ids, text_of, wait_for  # noqa: F401
from .db_data import database_url, fcc, l10, l12, running_server

CUAU_A_EHULL = 0.175 * 2 / 3 - 0.10  # model A: CuAu above the Cu3Au-Au tie line
CU_A = 3.61


def _fcc_primitive(el: str, a: float) -> Structure:
    return Structure(
        Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), [el], [[0, 0, 0]]
    )


def _records() -> list[dict]:
    a, b = {"model": "A"}, {"model": "B"}
    out = [
        dict(structure=fcc("Cu", CU_A), energy=-3.50 * 4, **a),
        dict(structure=fcc("Au", 4.08), energy=-3.20 * 4, **a),
        dict(structure=fcc("Ni", 3.52), energy=-4.00 * 4, **a),
        dict(structure=l12("Cu", "Au", 3.75), energy=-3.60 * 4, **a),
        dict(structure=l10("Cu", "Au", 3.85), energy=-3.45 * 2, **a),
        dict(structure=l12("Ni", "Cu", 3.56), energy=-3.95 * 4, **a),  # CuNi3
        dict(structure=l10("Au", "Ni", 3.80), energy=-3.50 * 2, **a),  # AuNi, above
        dict(
            structure=Structure(
                Lattice.cubic(3.70),
                ["Cu", "Cu", "Au", "Ni"],
                [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
            ),
            energy=-3.70 * 4,
            **a,
        ),
    ]
    # strained Cu3Au cells above the hull (model A): more rows than one page of 10
    out += [
        dict(structure=l12("Cu", "Au", 3.75 + 0.03 * k), energy=(-3.60 + 0.04 * k) * 4, **a)
        for k in range(1, 6)
    ]
    out += [
        dict(structure=_fcc_primitive("Cu", CU_A), energy=-3.50, **b),
        dict(structure=fcc("Au", 4.08), energy=-3.20 * 4, **b),
        dict(structure=l12("Cu", "Au", 3.75), energy=-3.30 * 4, **b),
        dict(structure=l10("Cu", "Au", 3.85), energy=-3.50 * 2, **b),
    ]
    return out


@pytest.fixture(scope="module")
def site():
    with database_url("sqlite") as url:
        db = CrystalDB(url).init()
        report = db.import_records(_records(), submitter="alice")
        assert not report.rejected, report.rejected
        app = create_app(db, keys_from_environment=False)
        with running_server(app) as base:
            yield base, db
        db.close()


def api(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=20) as r:
        return json.load(r)


def shoot(element, name: str, tmp_path: Path) -> Path:
    """Screenshot of one element, into LAMKIT_TEST_SCREENSHOTS (e.g. docs) when set."""
    folder = Path(os.environ.get("LAMKIT_TEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"db-page-{name}.png"
    element.parent.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)
    assert element.screenshot(str(path)), path
    assert path.stat().st_size > 5_000
    return path


def hulls(driver) -> int:
    return int(driver.execute_script("return document.body.dataset.hulls || 0"))


def plot_hull(driver, chemsys: str, model: str) -> None:
    from selenium.webdriver.support.ui import Select

    done = hulls(driver)
    box = driver.find_element("id", "h-chemsys")
    box.clear()
    box.send_keys(chemsys)
    select = Select(driver.find_element("id", "h-model"))
    if select.first_selected_option.get_attribute("value") != model:
        select.select_by_value(model)  # a change re-plots by itself
        wait_for(driver, lambda d: hulls(d) > done, f"the {chemsys} hull of {model}")
        done = hulls(driver)
    driver.find_element("id", "hull-button").click()
    wait_for(driver, lambda d: hulls(d) > done, f"the {chemsys} hull of {model}")


CIRCLES = """return [...document.querySelectorAll('#hull-plot circle.hull-point')].map(c => ({
  id: +c.dataset.id, x: +c.dataset.x, y: +c.dataset.y, z: c.dataset.z === undefined ? null
  : +c.dataset.z, stable: c.dataset.stable === '1', title: c.querySelector('title').textContent,
  cx: +c.getAttribute('cx'), cy: +c.getAttribute('cy')}))"""


def circles(driver) -> dict[int, dict]:
    return {c["id"]: c for c in driver.execute_script(CIRCLES)}


def assert_plot_is_api_hull(driver, hull: dict) -> None:
    drawn = circles(driver)
    points = {p["id"]: p for p in hull["plot"]["points"]}
    assert set(drawn) == set(points)
    for pid, p in points.items():
        c = drawn[pid]
        assert c["stable"] == p["stable"], p
        assert c["x"] == pytest.approx(p["x"]) and c["y"] == pytest.approx(p["y"])
        if "z" in p:
            assert c["z"] == pytest.approx(p["z"])
        assert f"id {pid} · {p['formula']} · E_hull {p['e_above_hull']:.4f}" in c["title"]


def open_page(driver, base: str) -> None:
    driver.get(base + "/")
    wait_for(driver, lambda d: "Showing" in text_of(d, "message"), "the first results")


def test_binary_hull_plot_is_the_api_hull_and_follows_the_model(browser, site, tmp_path):  # noqa: F811
    base, db = site
    open_page(browser, base)
    hull_a = api(base, "/api/v1/hull/Au-Cu?model=A")
    plot_hull(browser, "Cu-Au", "A")
    assert_plot_is_api_hull(browser, hull_a)
    by_formula = {}  # the lowest entry of each formula (strained Cu3Au cells lie above)
    for e in sorted(hull_a["entries"], key=lambda e: -e["e_above_hull"]):
        by_formula[e["formula"]] = e
    assert by_formula["Cu3Au"]["stable"] and not by_formula["CuAu"]["stable"]
    assert by_formula["CuAu"]["e_above_hull"] == pytest.approx(CUAU_A_EHULL, abs=1e-6)
    # the hull line goes through the stable points, in order of x: pixel positions of circles
    drawn = circles(browser)
    line = browser.execute_script(
        "return document.querySelector('#hull-plot polyline.hull-line').getAttribute('points')"
    )
    xy = [tuple(map(float, pair.split(","))) for pair in line.split()]
    stable = sorted((c for c in drawn.values() if c["stable"]), key=lambda c: c["x"])
    assert xy == [pytest.approx((c["cx"], c["cy"]), abs=0.01) for c in stable]
    assert len(xy) == len(hull_a["plot"]["hull"]) == 3
    # hovering a point shows its record
    from selenium.webdriver import ActionChains

    cuau = by_formula["CuAu"]["id"]
    dot = browser.find_element("css selector", f'#hull-plot circle[data-id="{cuau}"]')
    ActionChains(browser).move_to_element(dot).perform()
    wait_for(browser, lambda d: f"id {cuau} · CuAu" in text_of(d, "hull-info"), "the hover")
    shoot(browser.find_element("id", "hull-panel"), "hull", tmp_path)

    # model B: CuAu on the hull, Cu3Au above it
    plot_hull(browser, "Cu-Au", "B")
    hull_b = api(base, "/api/v1/hull/Au-Cu?model=B")
    assert_plot_is_api_hull(browser, hull_b)
    stable_b = {c["id"] for c in circles(browser).values() if c["stable"]}
    assert stable_b == {e["id"] for e in hull_b["stable"]}
    assert {e["formula"] for e in hull_b["stable"]} == {"Cu", "Au", "CuAu"}
    assert stable_b != {e["id"] for e in hull_a["stable"]}
    assert "model B" in text_of(browser, "hull-message")
    # clicking a point opens its record
    (cuau_b,) = (e["id"] for e in hull_b["stable"] if e["formula"] == "CuAu")
    browser.find_element("css selector", f'#hull-plot circle[data-id="{cuau_b}"]').click()
    wait_for(browser, lambda d: f"id {cuau_b}" in text_of(d, "detail-title"), "the record")
    # the record's "phase diagram" link plots its own system and model
    plot_hull(browser, "Cu-Au", "A")
    done = hulls(browser)
    browser.find_element("id", "detail-hull").click()
    wait_for(browser, lambda d: hulls(d) > done, "the hull of the record")
    assert browser.find_element("id", "hull-plot").get_attribute("data-model") == "B"
    assert_plot_is_api_hull(browser, hull_b)
    assert console_errors(browser) == []


def test_ternary_hull_plot_and_its_tie_lines(browser, site, tmp_path):  # noqa: F811
    base, _ = site
    open_page(browser, base)
    plot_hull(browser, "Au-Cu-Ni", "A")
    hull = api(base, "/api/v1/hull/Au-Cu-Ni?model=A")
    assert hull["plot"]["kind"] == "ternary"
    assert_plot_is_api_hull(browser, hull)
    stable = {e["formula"] for e in hull["stable"]}
    assert {"Cu", "Au", "Ni", "Cu3Au", "CuNi3"} <= stable
    assert "AuNi" not in stable
    # the ternary Cu2AuNi (formation -0.15) lies below Cu3Au + CuNi3 + Au (-0.122): stable
    (inner,) = (e for e in hull["stable"] if len(e["composition"]) == 3)
    assert inner["composition"] == pytest.approx({"Cu": 0.5, "Au": 0.25, "Ni": 0.25})
    lines = hull["plot"]["lines"]
    # a triangulation of the stable points: every stable point is on a tie line, and Euler's
    # formula gives 3n - 3 - h edges for n points of which h lie on the triangle's sides
    ends = {tuple(round(v, 6) for v in end) for seg in lines for end in seg}
    points = {(round(p["x"], 6), round(p["y"], 6)) for p in hull["plot"]["points"] if p["stable"]}
    assert ends == points
    r3 = 3**0.5
    h = sum(1 for x, y in points if min(abs(y), abs(y - r3 * x), abs(y - r3 * (1 - x))) < 1e-6)
    assert (len(points), h) == (6, 5)
    assert len(lines) == 3 * len(points) - 3 - h
    n_lines = browser.execute_script(
        "return document.querySelectorAll('#hull-plot line.hull-line').length"
    )
    assert n_lines == len(lines)
    shoot(browser.find_element("id", "hull-panel"), "ternary", tmp_path)
    # no system typed: a message, the plot stays
    done = hulls(browser)
    browser.find_element("id", "h-chemsys").clear()
    browser.find_element("id", "hull-button").click()
    wait_for(browser, lambda d: hulls(d) > done, "the empty system's message")
    assert "Type a chemical system" in text_of(browser, "hull-message")
    assert len(circles(browser)) == len(hull["plot"]["points"])
    # a system with no energies of the model: a message, no points
    plot_hull(browser, "Au-Cu-Ni", "B")
    assert "No hull" in text_of(browser, "hull-message")
    assert circles(browser) == {}
    assert console_errors(browser, allow_network=True) == []


def test_element_picker_model_selector_sorting_and_paging(browser, site, tmp_path):  # noqa: F811
    from selenium.webdriver.support.ui import Select

    base, db = site
    open_page(browser, base)

    def searches() -> int:
        return int(browser.execute_script("return document.body.dataset.searches || 0"))

    def click(selector: str) -> None:
        done = searches()
        browser.find_element("css selector", selector).click()
        wait_for(browser, lambda d: searches() > done, f"the search after {selector}")

    # periodic table: only Cu and Au
    for el in ("Cu", "Au"):
        browser.find_element("css selector", f'#ptable button[data-el="{el}"]').click()
    assert set(text_of(browser, "pt-picked").split(": ")[1].split(", ")) == {"Cu", "Au"}
    browser.find_element("id", "pt-only").click()
    click("#pt-apply")
    want = [r.id for r in db.query(only_elements=["Au", "Cu"], limit=25).records]
    assert listed_ids(browser) == want and len(want) == 13
    assert browser.find_element("id", "f-only").get_attribute("value") == "Cu,Au"  # by Z
    shoot(browser.find_element("id", "results-panel"), "ptable", tmp_path)
    # has all of Ni (Cu, Au dropped)
    browser.find_element("id", "pt-clear").click()
    browser.find_element("css selector", '#ptable button[data-el="Ni"]').click()
    browser.find_element("id", "pt-all").click()
    click("#pt-apply")
    want = [r.id for r in db.query(elements=["Ni"], limit=25).records]
    assert listed_ids(browser) == want and len(want) == 4

    # the model selector of the search
    browser.get(base + "/#search")
    wait_for(browser, lambda d: "Showing" in text_of(d, "message"), "all records")
    Select(browser.find_element("id", "f-model")).select_by_value("B")
    click("#search-button")
    assert listed_ids(browser) == [r.id for r in db.query(model="B").records]
    assert len(listed_ids(browser)) == 4

    # sortable columns: energy per atom up, then down
    browser.get(base + "/#search?limit=10")
    wait_for(browser, lambda d: len(listed_ids(d)) == 10, "a page of 10")
    click('#results th[data-sort="energy_per_atom"]')
    page1 = db.query(order_by="energy_per_atom", limit=10)
    assert listed_ids(browser) == [r.id for r in page1.records]
    th = browser.find_element("css selector", '#results th[data-sort="energy_per_atom"]')
    assert "sorted-asc" in th.get_attribute("class")
    click('#results th[data-sort="energy_per_atom"]')
    assert listed_ids(browser) == [
        r.id for r in db.query(order_by="-energy_per_atom", limit=10).records
    ]
    click('#results th[data-sort="formula"]')
    assert listed_ids(browser) == [r.id for r in db.query(order_by="formula", limit=10).records]
    # pages: next, then previous gives page 1 again
    click('#results th[data-sort="energy_per_atom"]')
    assert listed_ids(browser) == [r.id for r in page1.records]
    assert browser.find_element("id", "prev-page").get_attribute("disabled")
    click("#next-page")
    page2 = db.query(order_by="energy_per_atom", limit=10, cursor=page1.next_cursor)
    assert listed_ids(browser) == [r.id for r in page2.records]
    assert len(page2.records) == db.count() - 10
    click("#prev-page")
    assert listed_ids(browser) == [r.id for r in page1.records]
    assert "page 1" in text_of(browser, "page-info")
    assert console_errors(browser) == []


def test_conventional_cell_next_to_the_stored_cell(browser, site, tmp_path):  # noqa: F811
    base, db = site
    (prim,) = db.query(model="B", nsites=(1, 1)).records
    browser.get(f"{base}/#structure/{prim.id}")
    wait_for(browser, lambda d: f"id {prim.id}" in text_of(d, "detail-title"), "the record")

    def kv(table_id: str) -> dict[str, str]:
        rows = browser.find_elements("css selector", f"#{table_id} tr")
        return {
            r.find_element("tag name", "th").text: r.find_element("tag name", "td").text
            for r in rows
        }

    stored, conv = kv("lattice-table"), kv("conventional-table")
    assert stored["sites"] == "1"
    assert stored["α, β, γ (°)"] == "60.00, 60.00, 60.00"
    assert conv["sites"] == "4"
    assert conv["a, b, c (Å)"] == ", ".join([f"{CU_A:.4f}"] * 3)
    assert conv["α, β, γ (°)"] == "90.00, 90.00, 90.00"
    assert float(conv["volume (Å³)"]) == pytest.approx(CU_A**3, abs=1e-3)
    # the picture switches to the conventional cell: 4 atoms drawn (plus periodic images)
    before = int(
        browser.execute_script(
            "return +document.getElementById('structure-canvas').dataset.atomsDrawn"
        )
    )
    browser.find_element("id", "view-conventional").click()
    wait_for(
        browser,
        lambda d: (
            int(
                d.execute_script(
                    "return +document.getElementById('structure-canvas').dataset.atomsDrawn"
                )
            )
            > before
        ),
        "the conventional picture",
    )
    shoot(browser.find_element("id", "detail-panel"), "conventional", tmp_path)
    assert console_errors(browser) == []


#: every resource the page asked for: [url, HTTP status (0: not sent), bytes, ms, kind]
DOC_REQUESTS = """return performance.getEntriesByType('resource').map(e => [e.name,
  e.responseStatus, e.transferSize, e.duration, e.initiatorType])"""


@pytest.mark.parametrize("page", ["docs", "redoc"])
def test_api_docs_render_offline(browser, site, page, tmp_path):  # noqa: F811
    base, _ = site
    html = urllib.request.urlopen(f"{base}/{page}", timeout=20).read().decode()
    assert "cdn." not in html and "googleapis" not in html
    browser.get(f"{base}/{page}")
    # the operations of the spec are rendered by the page's own scripts
    wait_for(
        browser,
        lambda d: (
            "Search structures" in d.find_element("tag name", "body").text
            and "Convex hull of a chemical system" in d.find_element("tag name", "body").text
        ),
        f"the rendered {page}",
    )
    requested = browser.execute_script(DOC_REQUESTS)
    local = [name for name, *_ in requested if name.startswith(base)]
    assert any(url.endswith("/openapi.json") for url in local)
    if page == "docs":
        shoot(browser.find_element("tag name", "body"), "docs", tmp_path)
    # anything from elsewhere (ReDoc's logo on cdn.redoc.ly) was refused by the page's
    # Content-Security-Policy: never sent, and said so on the console; nothing else went wrong
    logged = console_errors(browser)
    blocked = [e for e in logged if "Content Security Policy" in e]
    errors = [e for e in logged if "Content Security Policy" not in e]
    for name, status, size, _duration, _kind in requested:
        if not name.startswith(base):
            assert (status, size) == (0, 0), name
            assert any(name in e and "blocked" in e for e in blocked), (name, blocked)
    assert errors == []


# ---------------------------------------------------------------- without a browser
def test_docs_pages_load_only_what_the_server_serves(site):
    pytest.importorskip("fastapi_offline", reason="fastapi-offline (the db extra) serves /docs")
    import re

    base, _ = site
    for page in ("docs", "redoc"):
        with urllib.request.urlopen(f"{base}/{page}", timeout=20) as r:
            html = r.read().decode()
            csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "img-src 'self' data:" in csp
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert refs and all(ref.startswith("/") for ref in refs), refs
        for ref in refs:
            with urllib.request.urlopen(base + ref, timeout=20) as r:
                assert r.status == 200 and len(r.read()) > 1000, ref


def test_ternary_tie_lines_triangulate_the_stable_points():
    from lamkit.db.service.hullview import tie_lines

    r3 = 3**0.5 / 2

    def pt(x, y, z):
        return {"x": x, "y": y, "z": z, "stable": True}

    corners = [pt(0, 0, 0.0), pt(1, 0, 0.0), pt(0.5, r3, 0.0)]
    assert len(tie_lines(corners)) == 3  # coplanar: the triangle's sides
    inner = pt(0.5, r3 / 3, -0.2)  # the centre, below the plane: joined to each corner
    lines = tie_lines(corners + [inner])
    assert len(lines) == 6
    assert sum(1 for a, b in lines if [0.5, r3 / 3] in (a, b)) == 3
    edge = pt(0.5, 0, -0.3)  # on the bottom side: splits it, 3 * 5 - 3 - 4 = 8 edges
    assert len(tie_lines(corners + [inner, edge])) == 8
    assert tie_lines(corners[:2]) == []


def test_conventional_cell_of_a_primitive_cell():
    from lamkit.db.service.views import conventional_view

    conv = conventional_view(_fcc_primitive("Cu", CU_A))
    assert conv is not None and conv["nsites"] == len(conv["sites"]) == 4
    lat = conv["lattice"]
    assert [lat["a"], lat["b"], lat["c"]] == pytest.approx([CU_A] * 3)
    assert [lat["alpha"], lat["beta"], lat["gamma"]] == pytest.approx([90.0] * 3)
    assert {s["wyckoff"] for s in conv["sites"]} == {"a"}
    tetragonal = conventional_view(l10("Cu", "Au", 3.85))  # P4/mmm: the stored 2-site cell
    assert tetragonal is not None and tetragonal["nsites"] == 2


def test_tie_lines_of_random_ternary_hulls_make_full_triangulations():
    """pymatgen's PhaseDiagram picks the stable phases of random Li-Na-K energies; their tie
    lines must triangulate the triangle: 3n - 3 - h edges (h points on its sides)."""
    import numpy as np
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    from lamkit.db.service.hullview import tie_lines

    rng = np.random.default_rng(7)
    els, r3 = ["Li", "Na", "K"], 3**0.5 / 2
    for _ in range(60):
        entries = [PDEntry(Composition({e: 1}), 0.0) for e in els]
        for _ in range(int(rng.integers(1, 10))):
            counts = rng.integers(0, 4, size=3)
            if counts.sum() == 0:
                continue
            comp = Composition(dict(zip(els, map(int, counts))))
            entries.append(PDEntry(comp, -rng.random() * comp.num_atoms))
        pd = PhaseDiagram(entries)
        pts = []
        for e in pd.stable_entries:
            f = e.composition.fractional_composition
            x, y = f["Na"] + f["K"] / 2, f["K"] * r3
            pts.append({"x": x, "y": y, "z": pd.get_form_energy_per_atom(e), "stable": True})
        xy = {(round(p["x"], 9), round(p["y"], 9)) for p in pts}
        h = sum(
            1 for x, y in xy if min(abs(y), abs(y - 2 * r3 * x), abs(y - 2 * r3 * (1 - x))) < 1e-7
        )
        assert len(tie_lines(pts)) == 3 * len(xy) - 3 - h
