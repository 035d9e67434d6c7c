"""The report in a real browser: Debian's headless Chromium, driven by
Selenium through Debian's chromedriver (.ci/run installs both)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reports import build

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver packages (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1300,2000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.mark.parametrize("run", ["run_base", "run_seed"])
def test_report_renders_without_errors(browser, fixtures, tmp_path, run):
    report = build.build_report([fixtures / run], output=tmp_path / "report.html")
    browser.get(report.as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);")
    assert images and all(complete and width > 0 for complete, width, _ in images), images
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    height = browser.execute_script("return document.body.scrollHeight;")
    browser.set_window_size(1300, min(height, 12000))
    shot = tmp_path / f"{run}.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000


def test_tables_sort_on_click(browser, fixtures, tmp_path):
    report = build.build_report([fixtures / "run_base"], output=tmp_path / "report.html")
    browser.get(report.as_uri())
    column = browser.execute_script("""
        const table = Array.from(document.querySelectorAll('table.sortable'))
            .filter(t => t.tHead.rows[0].cells[0].textContent.trim() === 'case_id')
            .sort((a, b) => b.tBodies[0].rows.length - a.tBodies[0].rows.length)[0];
        const header = Array.from(table.tHead.rows[0].cells).findIndex(c => c.textContent.trim() === 'latency_ms');
        table.tHead.rows[0].cells[header].click();
        return Array.from(table.tBodies[0].rows).map(r => parseFloat(r.cells[header].textContent));
    """)
    assert column == sorted(column) and len(column) == 18
