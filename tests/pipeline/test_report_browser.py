"""The report of a real run, opened in headless Chromium: loads, no broken image, no console error."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.report.browser import chromium_path, open_report

pytestmark = [pytest.mark.slow, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]


def test_report_in_headless_chromium(e2e_run, tmp_path):
    chromium_path()  # skip (or fail under CI) before any work when there is no browser
    report = e2e_run / "report.html"
    html = report.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched
    shot = tmp_path / "report_screenshot.png"  # the shared run stays read-only
    result = open_report(report, shot)
    assert result["console"] == [] and result["page_errors"] == []
    assert result["broken"] == []
    assert result["n_images"] >= 8
    for title in ("Run summary and provenance", "Cohort fingerprint and split", "Lesion segmentation (CRFE)",
                  "Pathological-type classification", "Test metrics: manual vs predicted masks",
                  "Decision-curve analysis", "TRIPOD+AI / CLEAR checklist", "Table 1: baseline characteristics",
                  "Calibration after SMOTE", "Binary sub-tasks of the pathological type",
                  "Clinical vs radiomics vs histogram features"):
        assert title in result["sections"]
    assert shot.stat().st_size > 50_000
    out = REPO / "runs" / "test-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, out / "report_screenshot.png")
