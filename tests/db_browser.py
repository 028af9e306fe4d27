"""Headless Chromium for the web page tests (not a test module): the ``browser`` fixture
(selenium + Debian's chromedriver; skipped when missing, failing instead under CI=true, where
.ci/browser.sh provides them via LAMKIT_TEST_CHROMIUM / LAMKIT_TEST_CHROMEDRIVER) and helpers
that drive and read the page. Import the fixture into a test module with
``from .db_browser import browser  # noqa: F401``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .db_data import IN_CI

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
