"""Headless Chromium (Debian's `chromium` and `chromium-driver`) through selenium, for the status
page's test in a real browser (tests/test_serve_engine.py). Without chromium the test is skipped,
except in CI (`CI` set), where it must run: .ci/run installs the two packages."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium session (a fresh profile: no cookies), quit after the block."""
    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)) and not os.environ.get("CI"):
        pytest.skip(f"no {CHROMIUM} and {DRIVER}: `apt-get install -y chromium chromium-driver` to run it")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)  # --no-sandbox: CI runs as root, where Chromium's sandbox will not start
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def text_of(driver, css: str) -> str:
    """An element's text, found afresh: the page's script swaps its <main> while a batch runs."""
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


SNAPSHOT = """
const main = document.querySelector("main"), bar = main.querySelector(".big progress");
const text = (css) => (main.querySelector(css) || {}).textContent || "";
return {status: text(".status"), spent: text(".spent"),
        done: bar && bar.hasAttribute("max") ? Number(bar.value) : 0, total: bar ? Number(bar.max) : 0};
"""


def batch_page_now(driver) -> dict:
    """The batch page's status, progress (done, total) and $ spent as the browser shows them, read
    in one go: the page's script may swap its <main> between two reads of separate elements."""
    return driver.execute_script(SNAPSHOT)


def sign_in(driver, base: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_until(driver, lambda: "Log out" in driver.page_source, 30, "the login did not go through")


def wait_until(driver, check, timeout: float, why: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, why
        time.sleep(0.2)


def page_errors(driver) -> list[str]:
    """The console's errors (a script or stylesheet the CSP refused would be one)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
