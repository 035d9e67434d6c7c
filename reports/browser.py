"""The report in a real browser: Debian's headless Chromium driven by Selenium
through Debian's chromedriver (`apt-get install chromium chromium-driver`).

`chromium()` opens the browser the tests and `python -m reports screenshot`
use; `screenshot()` saves one element of a report (a section, a figure) as a
PNG, as a reader's browser renders it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# No network, no background services: these machines have no network, and
# Chromium's background connections would be refused at every start.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


class BrowserError(RuntimeError):
    """No browser to render with; the message says how to install one."""


def available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def unavailable_reason() -> str:
    """Why no browser can be opened here, and how to install one."""
    return (f"no Chromium at {CHROMIUM} or no ChromeDriver at {CHROMEDRIVER}: install Debian's chromium and "
            "chromium-driver packages (apt-get install chromium chromium-driver; .ci/run installs them)")


@contextlib.contextmanager
def chromium(width: int = 1300, height: int = 2000) -> Iterator:
    """A Selenium driver of headless Chromium, its console log recorded."""
    if not available():
        raise BrowserError(unavailable_reason())
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:  # a dependency of the project: missing only where it was installed --no-deps
        raise BrowserError(f"no Selenium to drive Chromium ({error}): python -m pip install 'selenium>=4.20'") \
            from None

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(report: str | Path, selector: str, output: str | Path, width: int = 1300) -> Path:
    """Save the element of `report` matched by the CSS `selector` as a PNG."""
    report = Path(report).resolve()
    if not report.is_file():
        raise FileNotFoundError(f"{report}: no such report (build one with python -m reports build RUN_DIR)")
    if width < 200:
        raise ValueError(f"the window must be at least 200 pixels wide. Received: --width={width}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with chromium(width=width) as driver:
        from selenium.common.exceptions import NoSuchElementException
        from selenium.webdriver.common.by import By

        driver.get(report.as_uri())
        height = driver.execute_script("return document.body.scrollHeight;")
        driver.set_window_size(width, min(int(height), 16000))
        try:
            element = driver.find_element(By.CSS_SELECTOR, selector)
        except NoSuchElementException:
            raise ValueError(f"{report}: nothing matches the selector {selector!r}. Received: "
                             f"--selector={selector}") from None
        driver.execute_script("arguments[0].scrollIntoView();", element)
        element.screenshot(str(output))
    return output
