"""Open a report in headless Chromium (Debian's /usr/bin/chromium) via Playwright."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    """The Chromium binary; skip with a reason when absent (fail under CI=true, where .ci/run installs it)."""
    path = os.environ.get("CERVIRAD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        msg = "headless Chromium not found (apt-get install chromium, or set CERVIRAD_CHROMIUM)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; .ci/run installs it, so under CI its absence is a failure")
        pytest.skip(msg)
    return path


def open_report(report: Path, screenshot: Path) -> dict:
    """Load ``report``; return console errors, page errors, broken images, image count and title."""
    from playwright.sync_api import sync_playwright

    console, page_errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(report.resolve().as_uri(), wait_until="load")
            broken = page.evaluate(
                "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)")
            n_images = page.evaluate("document.images.length")
            sections = page.evaluate("Array.from(document.querySelectorAll('section h2')).map(h => h.textContent)")
            title = page.title()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"console": console, "page_errors": page_errors, "broken": broken, "n_images": n_images,
            "sections": sections, "title": title}
