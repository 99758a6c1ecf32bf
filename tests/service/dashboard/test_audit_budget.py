"""Issue 15 in the dashboard, in headless Chromium against a live server: a job submitted through the Submit form with
an inference budget and a ranking audit, its accuracy-against-cost front and audit on the job page, the cross-job
audit page. One real tiny job for the whole module."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest
import timm
from fastapi import FastAPI
from fastapi.testclient import TestClient
from scipy.stats import kendalltau, spearmanr

from tests.service._tiny import TINY_ARCHS
from tests.service.dashboard.test_pages import LAYOUT_WIDTHS, OVERFLOW_SCRIPT, console_errors, open_page, wait_for
from zooens.ensemble.cost import count_flops
from zooens.service.dashboard import router
from zooens.service.dashboard.router import audit_means, audit_row, better_predictor
from zooens.service.db.session import upgrade_to_head

JOB_TIMEOUT = 420
BUDGET_MARGIN = 1.05


def _figures(spearman, kendall, regret, reason=None):
    return {
        "spearman": {"value": spearman, "reason": None if spearman is not None else reason},
        "kendall": {"value": kendall, "reason": None if kendall is not None else reason},
        "regret": regret,
        "regret_reason": None if regret is not None else reason,
    }


BETTER_CASES = [  # (knn, logme, better)
    (_figures(0.5, 0.4, 0.0), _figures(-0.5, -0.4, 0.1), "knn"),
    (_figures(0.5, 0.4, 0.0), _figures(0.5, 0.6, 0.0), "logme"),  # equal rho: tau decides
    (_figures(1.0, 1.0, 0.02), _figures(1.0, 1.0, 0.0), "logme"),  # equal correlations: the lower regret
    (_figures(None, None, 0.0, "only 1 model(s)"), _figures(None, None, 0.0, "only 1 model(s)"), None),
    (_figures(None, 0.2, 0.0, "constant"), _figures(0.9, 0.1, 0.0), "knn"),  # undefined rho: skipped
]


@pytest.mark.parametrize("knn, logme, better", BETTER_CASES)
def test_better_predictor_rule(knn, logme, better):
    assert better_predictor({"knn": knn, "logme": logme}) == better
    assert better_predictor({"knn": knn}) is None


def test_audit_means_leave_undefined_figures_out():
    rows = [
        audit_row(
            1,
            1,
            "a",
            {
                "predictors": {"knn": _figures(0.5, 0.25, 0.0), "logme": _figures(None, None, 0.1, "x")},
                "audited_models": 3,
            },
        ),
        audit_row(2, 1, "a", {"predictors": {"knn": _figures(-0.5, 0.75, 0.2)}, "finetuned_accuracy": {"m": 0.5}}),
    ]
    assert rows[1].audited_models == 1 and rows[1].figures["logme"]["spearman"] == (None, "no audit for this predictor")
    means = audit_means(rows)
    assert means["knn"]["spearman"] == (0.0, 2) and means["knn"]["kendall"] == (0.5, 2)
    assert means["knn"]["regret"][0] == pytest.approx(0.1)
    assert means["logme"]["spearman"] == (None, 0) and means["logme"]["regret"] == (0.1, 1)


def test_audit_page_without_audited_jobs_says_so(zooens_home):
    upgrade_to_head()
    app = FastAPI()
    app.include_router(router)
    page = TestClient(app).get("/dashboard/audit")
    assert page.status_code == 200 and 'id="audit-empty"' in page.text and "<script>" not in page.text
    assert 'href="/dashboard/audit" class="active"' in page.text


def _tiny_forward_gflops(resolution: int) -> list[float]:
    """Each tiny user model's forward pass at `resolution`, counted as the worker counts it (its linear head adds
    about 2 x features x classes FLOPs, far below the margin)."""
    return [
        count_flops(timm.create_model(arch, pretrained=False, num_classes=0), resolution) / 1e9
        for arch in TINY_ARCHS.values()
    ]


@pytest.fixture(scope="module")
def budget() -> float:
    """Every single model fits, pairs of the costlier ones may not: a budget that can bind but never refuses."""
    return BUDGET_MARGIN * max(_tiny_forward_gflops(32))


@pytest.fixture(scope="module")
def audited_job(browser, live_server, digits_zip, budget, screenshots):
    """Submit through the Submit form with a GFLOPs budget and --audit-ranking 1, watch it finish on the Job page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, base = browser, live_server.url
    open_page(driver, base + "/dashboard/submit", "#submit-form")
    form = driver.find_element(By.ID, "submit-form")
    form.find_element(By.NAME, "token").send_keys(live_server.token)
    form.find_element(By.NAME, "dataset_file").send_keys(str(digits_zip))
    form.find_element(By.NAME, "dataset_name").send_keys("digits-audit")
    for name, value in (
        ("zoo", "user"),
        ("top_k", "2"),
        ("learning_rates", "0.05, 0.5"),
        ("steps", "60"),
        ("ensemble_size", "5"),
        ("resolution", "32"),
        ("max_gflops", repr(budget)),
        ("audit_ranking", "1"),
    ):
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    taps = Select(form.find_element(By.NAME, "taps"))
    assert taps.first_selected_option.get_attribute("value") == "auto"  # the job's default
    taps.select_by_value("none")  # the three models alone: the audit below fine-tunes the third
    driver.save_screenshot(str(screenshots / "submit-budget.png"))
    form.find_element(By.ID, "submit-button").click()
    wait_for(driver, lambda d: "/dashboard/jobs/" in d.current_url, timeout=120, what="the job page after submit")
    job_id = int(driver.current_url.rstrip("/").rsplit("/", 1)[1])
    wait_for(
        driver,
        lambda d: d.execute_script("return document.body.dataset.jobStatus") in ("succeeded", "failed", "cancelled"),
        timeout=JOB_TIMEOUT,
        what=f"job {job_id} to finish",
    )
    job = live_server.get_json(f"/api/v1/jobs/{job_id}")
    assert job["status"] == "succeeded", job["error"]
    return job_id


def _job_data(live_server, job_id):
    job = live_server.get_json(f"/api/v1/jobs/{job_id}")
    ensemble = live_server.get_json(f"/api/v1/jobs/{job_id}/ensemble")
    runs = live_server.get_json(f"/api/v1/jobs/{job_id}/runs")
    ranking = live_server.get_json(f"/api/v1/jobs/{job_id}/ranking")
    return job, ensemble, runs, ranking


def _shown(value: str) -> float | None:
    return None if value == "" else float(value)


@pytest.mark.browser
@pytest.mark.slow
def test_submit_form_sends_the_budget_and_the_audit(live_server, audited_job, budget):
    job, ensemble, runs, ranking = _job_data(live_server, audited_job)
    params = job["params"]
    assert params["max_gflops"] == pytest.approx(budget) and params["max_latency_ms"] is None
    assert params["audit_ranking"] == 1 and params["taps"] == "none"
    assert ensemble["max_gflops"] == pytest.approx(budget) and ensemble["gflops"] <= budget
    assert {r["model_name"] for r in runs} == {r["model_name"] for r in ranking}  # the audit fine-tuned the third model


@pytest.mark.browser
@pytest.mark.slow
def test_job_page_shows_the_front_and_the_audit_at_1280_and_1920(browser, live_server, audited_job, screenshots):
    from selenium.webdriver.common.by import By

    driver = browser
    job, ensemble, runs, ranking = _job_data(live_server, audited_job)
    front, audit = ensemble["front"], job["ranking_audit"]
    assert front["path"] and front["front"] and audit["audited_models"] == 3

    # The audit the API gives agrees with scipy over the runs and the ranking (the page shows these numbers).
    best = {}
    for r in runs:
        if r["strategy"] == "linear":
            best[r["model_name"]] = max(best.get(r["model_name"], -1.0), r["val_acc"])
    models = sorted(best)
    knn = {r["model_name"]: r["knn_accuracy"] for r in ranking}
    for figure, reference in (("spearman", spearmanr), ("kendall", kendalltau)):
        expected = reference([knn[m] for m in models], [best[m] for m in models]).statistic
        value = audit["predictors"]["knn"][figure]["value"]
        assert (value is None) == math.isnan(expected)
        if value is not None:
            assert value == pytest.approx(expected, abs=1e-12)

    try:
        for width in LAYOUT_WIDTHS:
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
            )
            open_page(driver, live_server.url + f"/dashboard/jobs/{audited_job}", "#front-plot svg.main-svg")
            wait_for(
                driver,
                lambda d: (
                    d.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")
                    and d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")
                    and d.find_elements(By.CSS_SELECTOR, "#scatter-plot svg.main-svg")
                ),
                what="the audit, runs, scatter",
            )
            driver.execute_script("window.dispatchEvent(new Event('resize'))")

            # The front: every path prefix and every budget point plotted at its cost, the budget line, the chosen one.
            traces = driver.execute_script(
                "return document.getElementById('front-plot').data"
                ".map((t) => ({name: t.name, x: t.x, y: t.y, yaxis: t.yaxis}))"
            )
            by_name = {}
            for t in traces:
                by_name.setdefault((t["name"], t["yaxis"]), t)
            path = by_name[("greedy path (each prefix)", "y")]
            assert path["x"] == pytest.approx([p["cost"] for p in front["path"]])
            assert path["y"] == pytest.approx([p["val_loss"] for p in front["path"]])
            assert by_name[("greedy path (each prefix)", "y2")]["y"] == pytest.approx(
                [p["test_accuracy"] for p in front["path"]]
            )
            best_trace = by_name[("best within each budget", "y")]
            assert best_trace["x"] == pytest.approx([p["cost"] for p in front["front"]])
            assert best_trace["y"] == pytest.approx([p["val_loss"] for p in front["front"]])
            chosen = by_name[("chosen ensemble", "y")]
            assert chosen["x"] == pytest.approx([ensemble["gflops"]]) and chosen["y"] == pytest.approx(
                [ensemble["val_ce"]]
            )
            n_points = len(driver.find_elements(By.CSS_SELECTOR, "#front-plot .scatterlayer .point"))
            assert n_points >= 2 * (len(front["path"]) + len(front["front"])) + 1
            shapes = driver.execute_script(
                "return document.getElementById('front-plot')._fullLayout.shapes.map((s) => s.x0)"
            )
            assert shapes == pytest.approx([front["budget"]])
            assert driver.find_element(By.ID, "front-note").get_attribute("data-metric") == front["metric"] == "gflops"

            # Ensemble facts and the runs table carry the costs.
            assert float(driver.find_element(By.ID, "ensemble-gflops").get_attribute("data-value")) == pytest.approx(
                ensemble["gflops"]
            )
            assert "at most" in driver.find_element(By.ID, "ensemble-budget").text
            shown = driver.execute_script(
                "return Array.from(document.querySelectorAll('#runs-table tbody tr')).map((tr) => "
                "[Number(tr.dataset.runId), tr.querySelector(\"td[data-key='gflops']\").dataset.sort,"
                " tr.querySelector(\"td[data-key='latency_ms']\").dataset.sort])"
            )
            assert sorted(i for i, _, _ in shown) == sorted(r["id"] for r in runs)
            by_id = {r["id"]: r for r in runs}
            assert [float(g) for _, g, _ in shown] == pytest.approx([by_id[i]["gflops"] for i, _, _ in shown])
            assert [float(ms) for _, _, ms in shown] == pytest.approx([by_id[i]["latency_ms"] for i, _, _ in shown])

            # The audit table shows the API's numbers, per predictor.
            for name, p in audit["predictors"].items():
                row = driver.find_element(By.CSS_SELECTOR, f"#audit-table tr[data-predictor='{name}']")
                cell = lambda key, row=row: row.find_element(By.CSS_SELECTOR, f"td[data-key='{key}']")  # noqa: E731
                assert int(cell("n").get_attribute("data-value")) == p["n"]
                for key, value in (
                    ("spearman", p["spearman"]["value"]),
                    ("kendall", p["kendall"]["value"]),
                    ("regret", p["regret"]),
                ):
                    assert _shown(cell(key).get_attribute("data-value")) == pytest.approx(value), (name, key)
                    assert (cell(key).text == "undefined") == (value is None)
            # kNN and LogME, and the static priors where the worker audits them (the tiny user models have no
            # ImageNet top-1: that prior may be absent)
            assert {"knn", "logme"} <= set(audit["predictors"]) <= {"knn", "logme", "imagenet_top1", "num_params"}
            reasons = driver.find_elements(By.CSS_SELECTOR, "#audit-reasons li")
            n_undefined = sum(
                (p["spearman"]["value"] is None) + (p["kendall"]["value"] is None) + (p["regret"] is None)
                for p in audit["predictors"].values()
            )
            assert len(reasons) >= n_undefined
            better = driver.find_element(By.ID, "audit-verdict").get_attribute("data-better")
            assert better == (better_predictor(audit["predictors"]) or "")
            spearman_note = driver.find_element(By.ID, "spearman")
            assert spearman_note.get_attribute("data-source") == "audit"
            knn_rho = audit["predictors"]["knn"]["spearman"]["value"]
            rho_shown = spearman_note.get_attribute("data-value")
            assert rho_shown == "nan" if knn_rho is None else float(rho_shown) == pytest.approx(knn_rho)

            assert driver.execute_script("return window.innerWidth") == width
            driver.save_screenshot(str(screenshots / f"job-budget-audit-{width}.png"))
            driver.find_element(By.ID, "front-plot").screenshot(str(screenshots / f"job-front-{width}.png"))
            driver.find_element(By.ID, "ranking-audit").screenshot(str(screenshots / f"job-audit-{width}.png"))
            assert driver.execute_script(OVERFLOW_SCRIPT) == [], f"job page at {width} px"
            assert console_errors(driver) == [], f"job page at {width} px"
        # the page's verdict rule is the router's
        for knn_case, logme_case, expected in BETTER_CASES:
            assert (
                driver.execute_script("return betterPredictor(arguments[0])", {"knn": knn_case, "logme": logme_case})
                == expected
            )
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


@pytest.mark.browser
@pytest.mark.slow
def test_audit_page_lists_the_job_and_the_mean(browser, live_server, audited_job, screenshots):
    from selenium.webdriver.common.by import By

    driver = browser
    job = live_server.get_json(f"/api/v1/jobs/{audited_job}")
    audit = job["ranking_audit"]
    try:
        for width in LAYOUT_WIDTHS:
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
            )
            open_page(driver, live_server.url + "/dashboard/audit", f"#audit-summary tr[data-job-id='{audited_job}']")
            row = driver.find_element(By.CSS_SELECTOR, f"#audit-summary tbody tr[data-job-id='{audited_job}']")
            assert (
                row.find_element(By.CSS_SELECTOR, "a").get_attribute("href").endswith(f"/dashboard/jobs/{audited_job}")
            )
            assert "digits-audit" in row.text
            assert (
                int(row.find_element(By.CSS_SELECTOR, "td[data-key='audited_models']").get_attribute("data-value")) == 3
            )
            mean = driver.find_element(By.ID, "audit-mean")
            for name, p in audit["predictors"].items():
                for key, value in (
                    ("spearman", p["spearman"]["value"]),
                    ("kendall", p["kendall"]["value"]),
                    ("regret", p["regret"]),
                ):
                    cell = row.find_element(By.CSS_SELECTOR, f"td[data-key='{name}_{key}']")
                    assert _shown(cell.get_attribute("data-value")) == pytest.approx(value), (name, key)
                    # one job with an audit in this server: the mean is its own figure
                    cell = mean.find_element(By.CSS_SELECTOR, f"td[data-key='{name}_{key}']")
                    assert _shown(cell.get_attribute("data-value")) == pytest.approx(value), (name, key)
            assert row.find_element(By.CSS_SELECTOR, "td[data-key='better']").get_attribute("data-value") == (
                better_predictor(audit["predictors"]) or ""
            )
            assert driver.find_element(By.CSS_SELECTOR, "header nav a.active").text == "Ranking audit"
            driver.save_screenshot(str(screenshots / f"audit-{width}.png"))
            assert driver.execute_script(OVERFLOW_SCRIPT) == [], f"audit page at {width} px"
            assert console_errors(driver) == []
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    # a job stopped before its ensemble has no audit: the job page says so, the audit page leaves it out
    headers = {"Authorization": f"Bearer {live_server.token}", "Content-Type": "application/json"}
    body = json.dumps(
        {
            "dataset_id": job["dataset_id"],
            "zoo": "user",
            "top_k": 1,
            "strategies": ["linear"],
            "steps": [5],
            "ensemble_size": 1,
        }
    ).encode()
    with urllib.request.urlopen(
        urllib.request.Request(live_server.url + "/api/v1/jobs", body, headers), timeout=30
    ) as resp:
        other = json.loads(resp.read())["id"]
    urllib.request.urlopen(
        urllib.request.Request(live_server.url + f"/api/v1/jobs/{other}/cancel", b"{}", headers), timeout=30
    )
    wait_for(
        driver,
        lambda d: live_server.get_json(f"/api/v1/jobs/{other}")["status"] == "cancelled",
        timeout=180,
        what="the cancel (after the unit under way, if a worker took the job)",
    )
    open_page(driver, live_server.url + f"/dashboard/jobs/{other}", "#audit-absent")
    assert "No ranking audit" in driver.find_element(By.ID, "audit-absent").text
    wait_for(
        driver,
        lambda d: (
            "No cost front" in d.find_element(By.ID, "front-note").text
            or "Appears" in d.find_element(By.ID, "front-note").text
        ),
        what="the front note",
    )
    open_page(driver, live_server.url + "/dashboard/audit", "#audit-summary")
    assert not driver.find_elements(By.CSS_SELECTOR, f"#audit-summary tr[data-job-id='{other}']")
    assert console_errors(driver) == []
