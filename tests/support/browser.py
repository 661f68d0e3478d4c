"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver.

Nothing is downloaded: Selenium is handed both binaries, so its driver manager never
runs. The browser resolves no host name but 127.0.0.1 (`--host-resolver-rules`), so a
page that reaches for a CDN fails in the test exactly as it would offline.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=ko-KR",
         "--autoplay-policy=no-user-gesture-required",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")


@contextmanager
def chromium() -> Iterator[Any]:
    """A fresh browser profile per call; fails (never skips) when the browser is missing, so
    a machine without it cannot pass `make test` by accident."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: "
                    "apt-get install -y chromium chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        driver.set_script_timeout(60)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver: Any, script: str, timeout: float = 120.0) -> Any:
    """Polls a JavaScript expression until it is truthy; returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: d.execute_script(f"return {script}"))
