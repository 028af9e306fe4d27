"""The crystal database's web page in headless Chromium (selenium + Debian's chromedriver).

The real service runs on a free loopback port (uvicorn in a thread) over a small SQLite
database; the page is driven like a person would: search by elements, page through the results,
open a record and read its lattice, sites, symmetry and energy above the hull off the page, and
look at the structure picture's pixels. JavaScript errors fail the tests.
Skipped when Chromium, chromedriver or selenium is missing, except under CI=true, where
.ci/browser.sh must have provided them (LAMKIT_TEST_CHROMIUM).
Set LAMKIT_TEST_SCREENSHOTS=<dir> to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lamkit.db import CrystalDB
from lamkit.db.service import create_app

from .test_db_service_data import (
    CUAU_EHULL,
    IN_CI,
    N_NACL,
    NACL_A,
    bcc,
    database_url,
    fcc,
    fill,
    running_server,
)

CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1100",
    "--force-device-scale-factor=1",
]
WAIT_S = 20
#: two records of another submitter, submitted long ago (the rest are "alice"'s, of today)
CAROL = [
    dict(structure=bcc("Fe", 2.87), submitter="carol", submitted="2020-03-01T12:00:00Z"),
    dict(structure=fcc("Ni", 3.52), submitter="carol", submitted="2021-06-15T08:00:00Z"),
]


def _missing(reason: str):
    if IN_CI:
        pytest.fail(f"{reason}; CI must run the web page tests (.ci/browser.sh installs them)")
    pytest.skip(reason)


def _browser_paths() -> tuple[str, str]:
    chromium = os.environ.get("LAMKIT_TEST_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
    )
    driver = os.environ.get("LAMKIT_TEST_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not Path(chromium).exists():
        _missing("no Chromium (set LAMKIT_TEST_CHROMIUM or install Debian's chromium)")
    if not driver or not Path(driver).exists():
        _missing("no chromedriver (install Debian's chromium-driver)")
    return chromium, driver


@pytest.fixture(scope="module")
def site():
    """(base URL, CrystalDB) of the service over the small test database."""
    with database_url("sqlite") as url:
        db = CrystalDB(url).init()
        fill(db)
        db.import_records(CAROL)
        app = create_app(db, keys_from_environment=False)
        with running_server(app) as base:
            yield base, db
        db.close()


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _browser_paths()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    with tempfile.TemporaryDirectory(prefix="lamkit-chromium-") as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for flag in CHROME_FLAGS + [f"--user-data-dir={profile}"]:
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=opts, service=Service(driver_path))
        try:
            driver.set_page_load_timeout(WAIT_S)
            yield driver
        finally:
            driver.quit()


# ---------------------------------------------------------------------------- helpers
def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(
        lambda d: condition(d), message=f"waiting for {what}"
    )


def text_of(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def console_errors(driver, allow_network: bool = False) -> list[str]:
    """SEVERE browser log entries since the last call (failed requests too unless allowed)."""
    out = []
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        if allow_network and entry.get("source") == "network":
            continue
        out.append(entry["message"])
    return out


def search(driver, **fields: str) -> None:
    """Fill the search form (input ids ``f-<name>``), press Search, wait for the answer."""
    from selenium.webdriver.support.ui import Select

    def press(button_id: str, what: str) -> None:
        done = searches(driver)
        driver.find_element("id", button_id).click()
        wait_for(driver, lambda d: searches(d) > done, what)

    press("reset-button", "the cleared search")
    for name, value in fields.items():
        el = driver.find_element("id", f"f-{name}")
        if el.tag_name == "select":
            Select(el).select_by_value(value)
        else:
            el.clear()
            el.send_keys(value)
    press("search-button", "the search results")


def searches(driver) -> int:
    """Searches the page has finished (``<body data-searches>``)."""
    return int(driver.execute_script("return document.body.dataset.searches || 0"))


def listed_ids(driver) -> list[int]:
    """Record ids of the result rows, read in one script (rows replaced by a new page while
    being read one by one would be stale elements)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#results-body tr')].map(tr => +tr.dataset.id)"
    )


def open_record(driver, record_id: int) -> None:
    driver.find_element("css selector", f'#results-body tr[data-id="{record_id}"]').click()
    wait_for(
        driver,
        lambda d: (
            d.find_element("id", "detail-panel").is_displayed()
            and f"id {record_id}" in text_of(d, "detail-title")
        ),
        f"the detail of record {record_id}",
    )


def kv_table(driver, table_id: str) -> dict[str, str]:
    rows = driver.find_elements("css selector", f"#{table_id} tr")
    return {
        r.find_element("tag name", "th").text: r.find_element("tag name", "td").text for r in rows
    }


CANVAS_STATS = """
const c = document.getElementById("structure-canvas");
const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
let painted = 0; const colours = new Set(); const near = arguments[0].map(() => 0);
for (let i = 0; i < d.length; i += 4) {
  if (d[i + 3] === 0) continue;
  painted++;
  colours.add((d[i] >> 4) * 256 + (d[i + 1] >> 4) * 16 + (d[i + 2] >> 4));
  arguments[0].forEach((rgb, k) => {
    if (Math.abs(d[i] - rgb[0]) + Math.abs(d[i + 1] - rgb[1]) + Math.abs(d[i + 2] - rgb[2]) < 40)
      near[k]++;
  });
}
return {painted, total: d.length / 4, colours: colours.size, near,
        atoms: Number(c.dataset.atomsDrawn || 0)};
"""


def canvas_stats(driver, colours: list[str]) -> dict:
    rgb = [[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in colours]
    return driver.execute_script(CANVAS_STATS, rgb)


def screenshot(driver, name: str, tmp_path: Path) -> Path:
    keep = os.environ.get("LAMKIT_TEST_SCREENSHOTS")
    folder = Path(keep) if keep else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    assert path.stat().st_size > 10_000  # a real picture, not an empty page
    return path


# ---------------------------------------------------------------------------- tests
def test_search_by_elements_lists_what_the_api_returns(browser, site, tmp_path):
    base, db = site
    browser.get(base + "/")
    wait_for(browser, lambda d: "Showing" in text_of(d, "message"), "the first results")
    n = db.count()
    wait_for(browser, lambda d: f"{n} structures" in text_of(d, "db-stats"), "the header counts")
    assert listed_ids(browser) == [r.id for r in db.query(limit=25).records]

    search(browser, elements="Na, Cl")
    want = [r.id for r in db.query(elements=["Cl", "Na"], limit=25).records]
    assert len(want) == N_NACL
    assert listed_ids(browser) == want
    assert f"of {N_NACL}" in text_of(browser, "message")
    assert "elements=Na" in browser.execute_script("return location.hash")

    # pages follow the API's cursors
    search(browser, elements="Na", order="energy_per_atom", limit="10")
    page1 = db.query(elements=["Na"], order_by="energy_per_atom", limit=10)
    assert listed_ids(browser) == [r.id for r in page1.records]
    browser.find_element("id", "next-page").click()
    page2 = db.query(
        elements=["Na"], order_by="energy_per_atom", limit=10, cursor=page1.next_cursor
    )
    wait_for(browser, lambda d: listed_ids(d) == [r.id for r in page2.records], "page 2")
    assert "page 2" in text_of(browser, "page-info")
    assert browser.find_element("id", "next-page").get_attribute("disabled")

    screenshot(browser, "search-na", tmp_path)
    search(browser, only="Cu,Au", ehull="0")
    assert listed_ids(browser) == [
        r.id for r in db.query(only_elements=["Au", "Cu"], e_above_hull_max=0).records
    ]
    assert console_errors(browser) == []


def form_values(driver, *names: str) -> dict[str, str]:
    return {n: driver.find_element("id", f"f-{n}").get_attribute("value") for n in names}


def test_search_by_sites_submitter_and_submission_date(browser, site):
    base, db = site
    browser.get(base + "/")
    wait_for(browser, lambda d: "Showing" in text_of(d, "message"), "the first results")

    def utc(*args: int) -> datetime:
        return datetime(*args, tzinfo=timezone.utc)

    # (form fields, the same search as CrystalDB.query keywords, how many it finds)
    cases = [
        ({"nsmin": "4", "nsmax": "8"}, dict(nsites=(4, 8)), None),
        ({"nsmin": "12"}, dict(nsites=(12, None)), 1),  # Li2O
        ({"submitter": "carol"}, dict(submitter="carol"), 2),
        ({"submitter": "carol", "nsmax": "2"}, dict(submitter="carol", nsites=(None, 2)), 1),
        # a date as "to" includes that day: Fe, submitted at noon on 2020-03-01
        (
            {"from": "2020-03-01", "to": "2020-03-01"},
            dict(submitted=(utc(2020, 3, 1), utc(2020, 3, 1, 23, 59, 59, 999999))),
            1,
        ),
        ({"to": "2020-02-29"}, dict(submitted=(None, utc(2020, 2, 29, 23, 59, 59))), 0),
        (
            {"from": "2021-01-01T00:00:00Z", "to": "2021-12-31", "nsmin": "3"},
            dict(submitted=(utc(2021, 1, 1), utc(2022, 1, 1)), nsites=(3, None)),
            1,
        ),
    ]
    for fields, query, n in cases:
        search(browser, **fields)
        want = [r.id for r in db.query(limit=25, **query).records]
        assert n is None or len(want) == n, (fields, want)
        assert listed_ids(browser) == want, fields
        if not want:
            assert "No structure matches" in text_of(browser, "message")
    # the fields live in the URL: a link fills the form and runs the search
    fe = db.query(submitter="carol", nsites=(None, 2)).records[0].id
    browser.get(f"{base}/#search?submitter=carol&nsites_max=2&submitted_to=2020-03-01")
    wait_for(browser, lambda d: listed_ids(d) == [fe], "the search of a link")
    assert form_values(browser, "submitter", "nsmax", "nsmin", "to") == {
        "submitter": "carol",
        "nsmax": "2",
        "nsmin": "",
        "to": "2020-03-01",
    }
    assert console_errors(browser) == []


def test_record_detail_shows_lattice_sites_symmetry_and_picture(browser, site, tmp_path):
    base, db = site
    browser.get(base + "/")
    wait_for(browser, lambda d: "Showing" in text_of(d, "message"), "the first results")
    search(browser, chemsys="Na-Cl", order="e_above_hull")
    (nacl,) = db.query(tags=["ground-state"]).records
    assert listed_ids(browser)[0] == nacl.id
    open_record(browser, nacl.id)
    assert "NaCl" in text_of(browser, "detail-title")
    lattice = kv_table(browser, "lattice-table")
    assert lattice["a, b, c (Å)"] == ", ".join([f"{NACL_A:.4f}"] * 3)
    assert lattice["α, β, γ (°)"] == "90.00, 90.00, 90.00"
    assert lattice["sites"] == "8"
    symmetry = kv_table(browser, "symmetry-table")
    assert symmetry["space group"] == "Fm-3m (No. 225)"
    assert symmetry["crystal system"] == "cubic"
    energies = kv_table(browser, "energy-table")
    assert energies["E above hull (eV/atom)"] == "0.0000 (on the hull)"
    assert energies["formation energy (eV/atom)"] == "-1.8500"
    sites = browser.find_elements("css selector", "#sites-table tbody tr")
    assert len(sites) == 8
    cells = [[td.text for td in tr.find_elements("tag name", "td")] for tr in sites]
    assert sorted(c[1] for c in cells) == ["Cl"] * 4 + ["Na"] * 4
    assert {c[2] for c in cells} == {"a", "b"}
    assert [float(x) for x in cells[0][3:]] == pytest.approx(list(nacl.frac_coords[0]), abs=1e-5)
    links = browser.find_elements("css selector", "#downloads a")
    assert [a.text for a in links] == ["CIF", "POSCAR", "EXTXYZ", "JSON"]

    # the picture: many painted pixels, shaded (many colours), Na purple and Cl green
    colours = ["#ab5cf2", "#1ff01f"]  # Jmol colours of Na and Cl
    stats = canvas_stats(browser, colours)
    assert stats["atoms"] >= 8
    assert stats["painted"] > 0.05 * stats["total"], stats
    assert stats["colours"] > 50, stats
    assert all(n > 100 for n in stats["near"]), stats
    shot = screenshot(browser, "nacl-detail", tmp_path)

    # dragging rotates the picture: other pixels, still painted
    from selenium.webdriver import ActionChains

    canvas = browser.find_element("id", "structure-canvas")
    before = browser.execute_script("return arguments[0].toDataURL()", canvas)
    ActionChains(browser).click_and_hold(canvas).move_by_offset(60, 25).release().perform()
    assert browser.execute_script("return arguments[0].toDataURL()", canvas) != before
    assert canvas_stats(browser, colours)["painted"] > 0.05 * stats["total"]

    # a structure above the hull, with its decomposition
    search(browser, only="Cu,Au")
    (cuau,) = db.query(tags=["L10"]).records
    open_record(browser, cuau.id)
    energies = kv_table(browser, "energy-table")
    assert energies["E above hull (eV/atom)"] == f"{CUAU_EHULL:.4f}"
    assert "Decomposes into" in text_of(browser, "decomposition")
    assert kv_table(browser, "symmetry-table")["crystal system"] == "tetragonal"
    assert canvas_stats(browser, ["#c88033"])["near"][0] > 100  # Cu
    screenshot(browser, "cuau-detail", tmp_path)

    # the record's own URL opens it directly
    browser.get(f"{base}/#structure/{nacl.id}")
    wait_for(browser, lambda d: f"id {nacl.id}" in text_of(d, "detail-title"), "a direct link")
    assert console_errors(browser) == []
    assert shot.exists()


def test_bad_input_shows_the_message(browser, site, tmp_path):
    base, _ = site
    browser.get(base + "/")
    wait_for(browser, lambda d: "Showing" in text_of(d, "message"), "the first results")
    search(browser, elements="Xx")
    message = browser.find_element("id", "message")
    assert "error" in message.get_attribute("class")
    assert "unknown element symbol(s) 'Xx'" in message.text
    assert not browser.find_element("id", "results").is_displayed()
    search(browser, elements="Na", spacegroup="not a group")  # a 400 naming the symbol
    wait_for(
        browser,
        lambda d: "unknown Hermann-Mauguin symbol 'not a group'" in text_of(d, "message"),
        "the space-group message",
    )
    search(browser, elements="Na", spacegroup="F m 3 m")  # symbols as typed find the group
    wait_for(browser, lambda d: "Showing" in text_of(d, "message"), "the Fm-3m results")
    browser.get(f"{base}/#structure/999999")
    wait_for(browser, lambda d: "no record" in text_of(d, "detail-title"), "the 404 message")
    assert not browser.find_element("id", "detail-body").is_displayed()
    screenshot(browser, "bad-input", tmp_path)
    # the refused requests show as failed loads; nothing else may go wrong
    assert console_errors(browser, allow_network=True) == []
