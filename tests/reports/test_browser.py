"""The report in a real browser: Debian's headless Chromium, driven by
Selenium through Debian's chromedriver (.ci/run installs both)."""

from __future__ import annotations

import sys

import pytest

from reports import browser as chromium
from reports import build
from tests.conftest import needs_system_package
from tests.reports.conftest import cli


@pytest.fixture(scope="module")
def installed():
    """Debian's Chromium and chromedriver, or the test stops: skipped on a
    developer's machine without them, failed in CI (`needs_system_package`)."""
    if not chromium.available():
        needs_system_package(chromium.unavailable_reason())


@pytest.fixture(scope="module")
def browser(installed):
    with chromium.chromium() as driver:
        yield driver


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


ALL_RESULTS = """
    const table = Array.from(document.querySelectorAll('#results table.sortable'))[0];
    const column = name => Array.from(table.tHead.rows[0].cells).findIndex(c => c.textContent.trim() === name);
    const visible = () => Array.from(table.tBodies[0].rows).filter(r => r.style.display !== 'none');
"""


def test_tables_sort_on_click(browser, fixtures, tmp_path):
    report = build.build_report([fixtures / "run_base"], output=tmp_path / "report.html")
    browser.get(report.as_uri())
    column = browser.execute_script(ALL_RESULTS + """
        const header = column('time (ms)');
        table.tHead.rows[0].cells[header].click();
        return Array.from(table.tBodies[0].rows).map(r => parseFloat(r.cells[header].textContent));
    """)
    assert column == sorted(column) and len(column) == 18


def test_every_axis_is_a_column_and_the_filter_narrows_the_rows(browser, fixtures, tmp_path):
    """Type words into the all-results table's filter box: only the rows that
    contain every word stay, and the count says how many."""
    from selenium.webdriver.common.by import By

    report = build.build_report([fixtures / "run_base"], output=tmp_path / "report.html")
    browser.get(report.as_uri())
    headers = browser.execute_script(ALL_RESULTS + "return Array.from(table.tHead.rows[0].cells).map(c => "
                                                   "c.textContent.trim());")
    for name in ("K", "stride", "groups", "reduction", "resolution (px)", "channels", "batch", "dtype", "mode",
                 "jit", "time (ms)", "peak memory (MB)"):
        assert name in headers, (name, headers)
    box = browser.find_element(By.CSS_SELECTOR, "#results input.filter")
    box.send_keys("shiftsum k7")
    rows = browser.execute_script(ALL_RESULTS + "return visible().map(r => r.cells[column('case')].textContent);")
    assert rows and all("shiftsum" in r and "k7" in r for r in rows), rows
    count = browser.find_element(By.CSS_SELECTOR, "#results .count").text
    assert count == f"{len(rows)} of 18 rows"
    box.clear()
    box.send_keys(" ")
    assert browser.execute_script(ALL_RESULTS + "return visible().length;") == 18


def test_cli_screenshot_saves_the_element_as_a_png(installed, fixtures, tmp_path):
    report = build.build_report([fixtures / "run_base"], output=tmp_path / "report.html")
    for selector, name in (("#summary", "summary.png"), (f'img[alt="{build.HEAT_MAP}"]', "heat-map.png")):
        result = cli("screenshot", str(report), "--selector", selector, "-o", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(tmp_path / name)
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    nowhere = cli("screenshot", str(report), "--selector", "#nowhere", "-o", str(tmp_path / "a.png"))
    lines = nowhere.stderr.strip().splitlines()
    assert nowhere.returncode == 2 and len(lines) == 1, nowhere.stderr
    assert lines[0].startswith("error: ") and lines[0].endswith("Received: --selector=#nowhere"), lines
    assert not (tmp_path / "a.png").exists()


def test_cli_screenshot_bad_input_is_one_line_and_exit_2(fixtures, tmp_path):
    """Checked before a browser starts: no Chromium needed."""
    report = build.build_report([fixtures / "run_base"], output=tmp_path / "report.html")
    cases = [(["screenshot", str(tmp_path / "none.html"), "-o", str(tmp_path / "a.png")], "no such report"),
             (["screenshot", str(report), "--width", "50", "-o", str(tmp_path / "a.png")], "Received: --width=50")]
    for args, message in cases:
        result = cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "a.png").exists()


def test_without_selenium_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(chromium, "available", lambda: True)
    monkeypatch.setitem(sys.modules, "selenium", None)  # `from selenium import ...` now raises ImportError
    with pytest.raises(chromium.BrowserError, match=r"pip install 'selenium>=4.20'"):
        with chromium.chromium():
            pass
