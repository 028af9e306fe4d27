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

from datetime import datetime, timezone

import pytest

from lamkit.db import CrystalDB
from lamkit.db.service import create_app

from .db_browser import (
    browser,  # noqa: F401 - a fixture
    canvas_stats,
    console_errors,
    kv_table,
    listed_ids,
    open_record,
    screenshot,
    search,
    text_of,
    wait_for,
)
from .db_data import (
    CUAU_EHULL,
    N_NACL,
    NACL_A,
    bcc,
    database_url,
    fcc,
    fill,
    running_server,
)

#: two records of another submitter, submitted long ago (the rest are "alice"'s, of today)
CAROL = [
    dict(structure=bcc("Fe", 2.87), submitter="carol", submitted="2020-03-01T12:00:00Z"),
    dict(structure=fcc("Ni", 3.52), submitter="carol", submitted="2021-06-15T08:00:00Z"),
]


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


# ---------------------------------------------------------------------------- tests
def test_search_by_elements_lists_what_the_api_returns(browser, site, tmp_path):  # noqa: F811
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


def test_search_by_sites_submitter_and_submission_date(browser, site):  # noqa: F811
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


def test_record_detail_shows_lattice_sites_symmetry_and_picture(browser, site, tmp_path):  # noqa: F811
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


def test_bad_input_shows_the_message(browser, site, tmp_path):  # noqa: F811
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
