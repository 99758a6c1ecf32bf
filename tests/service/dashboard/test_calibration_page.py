"""The Job page draws the calibrated ensemble's reliability diagram and lists the job's warnings (headless
Chromium against a live server; the job is a tiny one with a 20-image val split, run through the CLI)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.service.dashboard.test_pages import console_errors, open_page
from tests.service.jobs.test_calibration_job import RUN_ARGS  # the tiny job with a 20-image val split

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_job_page_shows_the_reliability_diagram_and_the_warnings(browser, live_server, screenshots):
    from selenium.webdriver.common.by import By

    from zooens.service.cli import app

    result = CliRunner().invoke(app, RUN_ARGS)  # the live server's registry: its ZOOENS_HOME is this module's
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.stdout)["job"]["id"]
    job = live_server.get_json(f"/api/v1/jobs/{job_id}")
    ens = live_server.get_json(f"/api/v1/jobs/{job_id}/ensemble")
    assert job["warnings"] and "only 20 images" in job["warnings"][0]
    assert ens["temperature"] > 0 and ens["reliability"]["split"] == "test"

    driver = browser
    open_page(driver, live_server.url + f"/dashboard/jobs/{job_id}", "#reliability-plot svg.main-svg")
    shown = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#job-warnings-list li.job-warning")]
    assert shown == job["warnings"]
    note = driver.find_element(By.ID, "reliability-note").text
    assert "Temperature T = " + f"{ens['temperature']:.3f}" in note and "On test" in note
    traces = driver.execute_script(
        "return document.getElementById('reliability-plot').data.map((t) => [t.name, t.x.length]);"
    )
    filled = sum(1 for b in ens["reliability"]["bins"] if b[0])
    assert traces == [["images per bin", 15], ["perfect calibration", 2], ["calibrated ensemble", filled]]
    driver.save_screenshot(str(screenshots / "job-warnings.png"))
    driver.execute_script("document.getElementById('reliability-plot').scrollIntoView({block: 'center'})")
    driver.save_screenshot(str(screenshots / "job-reliability.png"))
    assert console_errors(driver) == []
