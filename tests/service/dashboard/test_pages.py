"""The dashboard in headless Chromium against a live server: submit a job, follow it, read every page."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JOB_TIMEOUT = 420


def console_errors(driver) -> list[dict]:
    """Browser console entries at SEVERE level since the last call (reading the log drains it)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def wait_for(driver, condition, timeout: float = 30.0, what: str = "condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition, message=f"waited {timeout} s for {what}")


def open_page(driver, url: str, ready_css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ready_css), what=ready_css)


def column(driver, table_id: str, key: str) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(`#${arguments[0]} tbody td[data-key='${arguments[1]}']`))"
        ".map((td) => td.dataset.sort);",
        table_id,
        key,
    )


@pytest.fixture(scope="module")
def finished_job(browser, live_server, digits_zip, screenshots):
    """Submit a job through the Submit form, check the Jobs page follows it, watch it finish on the Job page."""
    from selenium.webdriver.common.by import By

    driver, base = browser, live_server.url
    open_page(driver, base + "/dashboard/submit", "#submit-form")
    assert console_errors(driver) == []
    form = driver.find_element(By.ID, "submit-form")
    form.find_element(By.NAME, "token").send_keys(live_server.token)
    form.find_element(By.NAME, "dataset_file").send_keys(str(digits_zip))
    form.find_element(By.NAME, "dataset_name").send_keys("digits-small")
    zoo = form.find_element(By.NAME, "zoo")
    zoo.clear()
    zoo.send_keys("user")
    for name, value in (
        ("top_k", "3"),
        ("learning_rates", "0.1, 1.0"),
        ("steps", "60"),
        ("ensemble_size", "5"),
        ("resolution", "32"),
    ):
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    driver.save_screenshot(str(screenshots / "submit.png"))
    form.find_element(By.ID, "submit-button").click()
    wait_for(driver, lambda d: "/dashboard/jobs/" in d.current_url, timeout=120, what="the job page after submit")
    job_id = int(driver.current_url.rstrip("/").rsplit("/", 1)[1])
    assert driver.execute_script("return localStorage.getItem('zooens.token')") == live_server.token

    # The Jobs page lists the job and refreshes itself while it runs.
    open_page(driver, base + "/dashboard/jobs", f"#jobs-table tr[data-job-id='{job_id}']")
    status = driver.find_element(By.CSS_SELECTOR, f"tr[data-job-id='{job_id}']").get_attribute("data-status")
    if status in ("queued", "running"):
        assert "Refreshing" in driver.find_element(By.ID, "refresh-note").text
        driver.save_screenshot(str(screenshots / "jobs-running.png"))

    # The Job page follows the job to its end without reloads.
    open_page(driver, base + f"/dashboard/jobs/{job_id}", "#stages [data-stage='embed']")
    shot_running = False
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        state = driver.execute_script("return document.body.dataset.jobStatus")
        if state in ("succeeded", "failed", "cancelled"):
            break
        if not shot_running and driver.find_elements(By.CSS_SELECTOR, "#ranking-table tbody tr"):
            driver.save_screenshot(str(screenshots / "job-running.png"))
            shot_running = True
        time.sleep(0.5)
    else:
        pytest.fail(f"job {job_id} did not finish within {JOB_TIMEOUT} s")
    assert state == "succeeded", driver.find_element(By.ID, "job-error").text
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#curve-plot svg.main-svg"), what="the loss curve")
    driver.save_screenshot(str(screenshots / "job-finished.png"))
    assert console_errors(driver) == []
    return job_id


def test_job_page_shows_progress_and_sortable_ranking(browser, live_server, finished_job, screenshots):
    from selenium.webdriver.common.by import By

    driver = browser
    open_page(driver, live_server.url + f"/dashboard/jobs/{finished_job}", "#ranking-table tbody tr")
    stages = {
        e.get_attribute("data-stage"): e.text for e in driver.find_elements(By.CSS_SELECTOR, "#stages [data-stage]")
    }
    # every entry embedded: the 3 models and their layer taps (`taps` auto, the default)
    assert re.match(r"model (\d+) of \1", stages["embed"]) and int(stages["embed"].split()[1]) > 3, stages["embed"]
    assert stages["finetune"].startswith("6 of 6 runs")
    assert stages["ensemble"] == "built"

    api_rows = live_server.get_json(f"/api/v1/jobs/{finished_job}/ranking")
    api_rows = api_rows["data"] if isinstance(api_rows, dict) else api_rows
    models = column(driver, "ranking-table", "model")
    # the default job ranks the three models and their layer taps; the top 3 are fine-tuned
    assert sorted(models) == sorted(r["model_name"] for r in api_rows) and len(models) > 3
    tuned = {r["model_name"] for r in api_rows if r["finetuned_val_acc"] is not None}
    assert len(tuned) == 3
    for key in ("knn_accuracy", "params", "embed_seconds"):
        assert all(v != "" for v in column(driver, "ranking-table", key)), key
    for key in ("finetuned_val_acc", "finetuned_val_ce", "updated_params"):
        cells = zip(column(driver, "ranking-table", "model"), column(driver, "ranking-table", key), strict=True)
        assert {m for m, v in cells if v != ""} == tuned, key

    header = driver.find_element(By.CSS_SELECTOR, "#ranking-table th[data-key='finetuned_val_ce']")
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    values = [float(v) for v in column(driver, "ranking-table", "finetuned_val_ce") if v != ""]  # blank: not tuned
    assert values == sorted(values) and len(values) == 3
    header.click()
    values = [float(v) for v in column(driver, "ranking-table", "finetuned_val_ce") if v != ""]
    assert values == sorted(values, reverse=True)
    driver.find_element(By.CSS_SELECTOR, "#ranking-table th[data-key='model']").click()
    models = column(driver, "ranking-table", "model")
    assert models == sorted(models, key=str.lower)
    driver.save_screenshot(str(screenshots / "job-ranking-sorted.png"))
    assert console_errors(driver) == []


def test_job_page_plots_spearman_and_ensemble(browser, live_server, finished_job):
    from scipy.stats import spearmanr
    from selenium.webdriver.common.by import By

    driver = browser
    open_page(driver, live_server.url + f"/dashboard/jobs/{finished_job}", "#curve-plot svg.main-svg")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#scatter-plot svg.main-svg"), what="the scatter")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#scatter-plot .scatterlayer .point")) == 3

    rows = live_server.get_json(f"/api/v1/jobs/{finished_job}/ranking")
    rows = rows["data"] if isinstance(rows, dict) else rows
    runs = live_server.get_json(f"/api/v1/jobs/{finished_job}/runs")
    runs = runs["data"] if isinstance(runs, dict) else runs
    best: dict[str, float] = {}  # the audit's fine-tuned accuracy: each model's best val accuracy
    for r in runs:
        best[r["model_name"]] = max(best.get(r["model_name"], -1.0), r["val_acc"])
    tuned = [r for r in rows if r["model_name"] in best]
    expected = spearmanr([r["knn_accuracy"] for r in tuned], [best[r["model_name"]] for r in tuned]).statistic
    shown = driver.find_element(By.ID, "spearman").get_attribute("data-value")
    if expected != expected:  # NaN: constant input
        assert shown == "nan"
    else:
        assert float(shown) == pytest.approx(expected, abs=1e-12)
    # The page's Spearman agrees with scipy on ties and reversed orders too.
    for x, y in (
        ([1, 2, 2, 3, 5], [2, 1, 3, 3, 9]),
        ([0.1, 0.5, 0.3, 0.9], [4, 3, 2, 1]),
        ([1, 1, 2, 3, 3, 3], [6, 5, 5, 1, 2, 0]),
    ):
        assert driver.execute_script("return spearman(arguments[0], arguments[1])", x, y) == pytest.approx(
            spearmanr(x, y).statistic, abs=1e-12
        )

    ensemble = live_server.get_json(f"/api/v1/jobs/{finished_job}/ensemble")
    n_points = len(driver.find_elements(By.CSS_SELECTOR, "#curve-plot .scatterlayer .point"))
    assert n_points == len(ensemble["loss_curve"]) >= 1
    member_rows = driver.find_elements(By.CSS_SELECTOR, "#members-table tbody tr")
    assert len(member_rows) == len(ensemble["members"]) >= 1
    weights = [float(r.find_elements(By.TAG_NAME, "td")[3].get_attribute("data-sort")) for r in member_rows]
    assert weights == pytest.approx([m["weight"] for m in ensemble["members"]])
    assert ensemble["test_acc"] is not None
    assert driver.find_element(By.ID, "ensemble-test-acc").text.endswith("%")
    assert console_errors(driver) == []


def test_jobs_page_lists_finished_job(browser, live_server, finished_job, screenshots):
    from selenium.webdriver.common.by import By

    driver = browser
    open_page(driver, live_server.url + "/", f"#jobs-table tr[data-job-id='{finished_job}']")
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-job-id='{finished_job}']")
    assert row.get_attribute("data-status") == "succeeded"
    text = row.text
    assert "digits-small" in text and "user" in text and "ago" in text
    assert driver.find_element(By.ID, "refresh-note").text == ""
    driver.save_screenshot(str(screenshots / "jobs.png"))
    assert console_errors(driver) == []


def test_dataset_page_counts_and_thumbnails(browser, live_server, finished_job, screenshots):
    from selenium.webdriver.common.by import By

    driver = browser
    job = live_server.get_json(f"/api/v1/jobs/{finished_job}")
    dataset_id = job["dataset_id"]
    open_page(driver, live_server.url + f"/dashboard/datasets/{dataset_id}", "#counts-table")
    rows = driver.find_elements(By.CSS_SELECTOR, "#counts-table tbody tr")
    assert [r.get_attribute("data-class") for r in rows] == [str(i) for i in range(10)]
    for r in rows:
        assert r.find_element(By.CSS_SELECTOR, "td[data-split='train']").text == "60"
        assert r.find_element(By.CSS_SELECTOR, "td[data-split='test']").text == "15"
    from zooens.service.thumbnails import THUMB_SIZE

    wait_for(
        driver,
        lambda d: d.execute_script(
            "const imgs = Array.from(document.querySelectorAll('#thumbs img'));"
            "return imgs.length === 120 && imgs.every((i) => i.complete && i.naturalWidth === arguments[0]);",
            THUMB_SIZE,
        ),
        what=f"120 thumbnails of {THUMB_SIZE} px (32 px digits enlarged by a whole factor)",
    )
    driver.save_screenshot(str(screenshots / "dataset.png"))
    open_page(driver, live_server.url + "/dashboard/datasets", "#datasets-table tbody tr")
    assert console_errors(driver) == []


def test_zoo_page_filters_and_paginates(browser, live_server, screenshots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    open_page(driver, live_server.url + "/dashboard/zoo", "#zoo-table")
    total = int(driver.find_element(By.CSS_SELECTOR, "#zoo-count [data-matched]").get_attribute("data-matched"))
    assert total > 1000, "the timm catalogue should be browsable"
    assert len(driver.find_elements(By.CSS_SELECTOR, "#zoo-table tbody tr")) == 50
    driver.save_screenshot(str(screenshots / "zoo.png"))

    driver.find_element(By.CSS_SELECTOR, "#zoo-pager a[data-page='2']").click()
    wait_for(driver, lambda d: "page=2" in d.current_url, what="page 2")
    assert "page 2 of" in driver.find_element(By.ID, "zoo-count").text

    open_page(driver, live_server.url + "/dashboard/zoo", "#zoo-table")
    Select(driver.find_element(By.ID, "zoo-weights")).select_by_value("yes")  # submits the form
    wait_for(driver, lambda d: "weights=yes" in d.current_url, what="the weights filter")
    available = [
        r.get_attribute("data-name") for r in driver.find_elements(By.CSS_SELECTOR, "#zoo-table tbody tr[data-name]")
    ]
    assert {"tiny-effnet", "tiny-resnet", "tiny-convnext"} <= set(available)
    assert all(
        td.get_attribute("data-weights") == "yes" for td in driver.find_elements(By.CSS_SELECTOR, "td[data-weights]")
    )

    search = driver.find_element(By.ID, "zoo-q")
    search.clear()
    search.send_keys("convnext")
    driver.find_element(By.ID, "zoo-apply").click()
    wait_for(driver, lambda d: "q=convnext" in d.current_url, what="the search")
    names = [
        r.get_attribute("data-name") for r in driver.find_elements(By.CSS_SELECTOR, "#zoo-table tbody tr[data-name]")
    ]
    assert names == ["tiny-convnext"]

    open_page(driver, live_server.url + "/dashboard/zoo?family=resnet&input_size=224", "#zoo-table")
    rows = driver.find_elements(By.CSS_SELECTOR, "#zoo-table tbody tr[data-name]")
    assert rows and all(r.find_element(By.CSS_SELECTOR, "td[data-key='family']").text == "resnet" for r in rows)
    assert all(r.find_element(By.CSS_SELECTOR, "td[data-key='input_size']").text == "224 px" for r in rows)
    open_page(driver, live_server.url + "/dashboard/zoo?max_params=0.3&origin=user", "#zoo-table")
    names = {
        r.get_attribute("data-name") for r in driver.find_elements(By.CSS_SELECTOR, "#zoo-table tbody tr[data-name]")
    }
    assert names == {"tiny-effnet", "tiny-convnext"}  # 0.10 M and 0.21 M; tiny-resnet has 0.37 M
    driver.save_screenshot(str(screenshots / "zoo-filtered.png"))
    assert console_errors(driver) == []


LAYOUT_WIDTHS = (1280, 1920)

OVERFLOW_SCRIPT = """
const root = document.documentElement, bad = [];
if (root.scrollWidth > root.clientWidth) bad.push(`page ${root.scrollWidth} > ${root.clientWidth}`);
const main = document.querySelector("main").getBoundingClientRect();
for (const e of document.querySelectorAll(".card, .table-card, table, .plot, .plot svg.main-svg, fieldset")) {
  const r = e.getBoundingClientRect();
  const name = e.id || e.tagName.toLowerCase() + "." + (e.getAttribute("class") || "");
  if (e.scrollWidth > e.clientWidth + 1 && e.tagName !== "svg")
    bad.push(`${name}: content ${e.scrollWidth} > box ${e.clientWidth}`);
  if (r.right > main.right + 1) bad.push(`${name}: right edge ${r.right} beyond the page's ${main.right}`);
  const card = e.parentElement && e.parentElement.closest(".card, .table-card");
  if (card && r.right > card.getBoundingClientRect().right + 1) bad.push(`${name}: sticks out of its card`);
}
return bad;
"""


def test_every_page_fits_at_1280_and_1920(browser, live_server, finished_job, screenshots):
    """No horizontal overflow on any page at either width: the page, every card, table and plot fit."""
    from selenium.webdriver.common.by import By

    driver, base = browser, live_server.url
    job = live_server.get_json(f"/api/v1/jobs/{finished_job}")
    # a second job to compare with: created and cancelled at once (a comparison must show any state)
    headers = {"Authorization": f"Bearer {live_server.token}", "Content-Type": "application/json"}
    import json
    import urllib.request

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
    with urllib.request.urlopen(urllib.request.Request(base + "/api/v1/jobs", body, headers), timeout=30) as resp:
        other = json.loads(resp.read())["id"]
    urllib.request.urlopen(urllib.request.Request(base + f"/api/v1/jobs/{other}/cancel", b"{}", headers), timeout=30)
    pages = [
        ("zoo", "/dashboard/zoo", "#zoo-table tbody tr"),
        ("datasets", "/dashboard/datasets", "#datasets-table tbody tr"),
        ("dataset", f"/dashboard/datasets/{job['dataset_id']}", "#counts-table"),
        ("jobs", "/dashboard/jobs", f"#jobs-table tr[data-job-id='{finished_job}'] td[data-key='metric'][data-sort]"),
        ("job", f"/dashboard/jobs/{finished_job}", "#curve-plot svg.main-svg"),
        ("submit", "/dashboard/submit", "#submit-form"),
        ("compare", f"/dashboard/compare?jobs={finished_job},{other}", "body[data-loaded] #compare-table"),
    ]
    try:
        for width in LAYOUT_WIDTHS:
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
            )
            for name, path, ready in pages:
                open_page(driver, base + path, ready)
                if name == "job":
                    wait_for(
                        driver,
                        lambda d: (
                            d.find_elements(By.CSS_SELECTOR, "#scatter-plot svg.main-svg")
                            and d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")
                        ),
                        what="the scatter and runs",
                    )
                    driver.execute_script("window.dispatchEvent(new Event('resize'))")
                assert driver.execute_script("return window.innerWidth") == width
                driver.save_screenshot(str(screenshots / f"{name}-{width}.png"))
                assert driver.execute_script(OVERFLOW_SCRIPT) == [], f"{name} at {width} px"
                assert console_errors(driver) == [], f"{name} at {width} px"
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_scatter_axes_stay_within_0_and_100_percent_with_distinct_ticks(browser, live_server, finished_job):
    from selenium.webdriver.common.by import By

    driver = browser
    open_page(driver, live_server.url + f"/dashboard/jobs/{finished_job}", "#scatter-plot svg.main-svg")
    for axis in ("xaxis", "yaxis"):
        lo, hi = driver.execute_script(f"return document.getElementById('scatter-plot')._fullLayout.{axis}.range")
        assert 0 <= lo < hi <= 1, (axis, lo, hi)
    for css in (".xtick text", ".ytick text"):
        ticks = [e.text for e in driver.find_elements(By.CSS_SELECTOR, f"#scatter-plot {css}")]
        assert len(ticks) >= 2 and len(set(ticks)) == len(ticks), ticks
        assert all(t.endswith("%") and 0 <= float(t[:-1]) <= 100 for t in ticks), ticks
    # the rule itself, on ranges that used to give "99%, 99%, 100%" or run past 100 %
    for values in ([0.99, 0.995, 1.0], [0.991, 0.992], [0.0, 1.0], [0.2, 0.9], [0.5]):
        axis = driver.execute_script("return accuracyAxis(arguments[0], 't')", values)
        lo, hi = axis["range"]
        assert 0 <= lo <= min(values) and max(values) <= hi <= 1
        decimals = int(axis["tickformat"][1:-1])
        n = int((hi - lo) / axis["dtick"]) + 2
        first = axis["dtick"] * (lo // axis["dtick"])
        labels = [f"{100 * (first + i * axis['dtick']):.{decimals}f}" for i in range(n)]
        assert len(set(labels)) == len(labels), (values, labels)


def test_job_page_lists_every_run_sortably(browser, live_server, finished_job):
    from selenium.webdriver.common.by import By

    driver = browser
    open_page(driver, live_server.url + f"/dashboard/jobs/{finished_job}", "#runs-table tbody tr")
    runs = live_server.get_json(f"/api/v1/jobs/{finished_job}/runs")
    runs = runs["data"] if isinstance(runs, dict) else runs
    assert len(driver.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")) == len(runs) == 6
    assert [float(v) for v in column(driver, "runs-table", "val_ce")] == sorted(r["val_ce"] for r in runs)
    assert sorted(float(v) for v in column(driver, "runs-table", "lr")) == sorted(r["hparams"]["lr"] for r in runs)
    header = driver.find_element(By.CSS_SELECTOR, "#runs-table th[data-key='seconds']")
    header.click()
    header.click()
    seconds = [float(v) for v in column(driver, "runs-table", "seconds")]
    assert seconds == sorted(seconds, reverse=True) and header.get_attribute("aria-sort") == "descending"
    # delete and download appear only once the API offers them (the OpenAPI document lists the routes)
    paths = live_server.get_json("/openapi.json")["paths"]
    offers_delete = any(
        p.startswith("/api/v1/jobs/{") and p.count("/") == 4 and "delete" in ops for p, ops in paths.items()
    )
    assert bool(driver.find_elements(By.ID, "delete-button")) == offers_delete
    offers_export = any(p.startswith("/api/v1/ensembles/{") and p.endswith("/export") for p in paths)
    assert bool(driver.find_elements(By.ID, "export-link")) == offers_export


def test_jobs_page_shows_metric_and_true_duration(browser, live_server, finished_job):
    from datetime import datetime

    from selenium.webdriver.common.by import By

    driver = browser
    open_page(
        driver,
        live_server.url + "/dashboard/jobs",
        f"tr[data-job-id='{finished_job}'] td[data-key='metric'][data-sort]",
    )
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-job-id='{finished_job}']")
    job = live_server.get_json(f"/api/v1/jobs/{finished_job}")
    ensemble = live_server.get_json(f"/api/v1/jobs/{finished_job}/ensemble")
    metric = row.find_element(By.CSS_SELECTOR, "td[data-key='metric']")
    assert float(metric.get_attribute("data-sort")) == pytest.approx(ensemble["test_acc"]) and "test" in metric.text
    wall = (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()
    shown = float(row.find_element(By.CSS_SELECTOR, "td[data-key='duration']").get_attribute("data-sort"))
    assert shown == pytest.approx(wall, abs=0.01) and shown > 0
    # ticking two jobs links to their comparison
    boxes = driver.find_elements(By.CSS_SELECTOR, "input.pick-job")
    if len(boxes) >= 2:
        boxes[0].click()
        boxes[1].click()
        ids = sorted(int(b.get_attribute("value")) for b in boxes[:2])
        assert (
            driver.find_element(By.ID, "compare-link")
            .get_attribute("href")
            .endswith("/dashboard/compare?jobs=" + ",".join(map(str, ids)))
        )


def test_submit_steps_placeholder_names_each_strategys_default(browser, live_server):
    from selenium.webdriver.common.by import By

    from zooens.ensemble import get_strategy

    driver = browser
    open_page(driver, live_server.url + "/dashboard/submit", "#submit-form")
    steps = driver.find_element(By.ID, "steps")
    linear = get_strategy("linear").default_sweep.steps
    assert steps.get_attribute("placeholder") == ", ".join(map(str, linear))
    driver.find_element(By.CSS_SELECTOR, "input[name=strategy][value=full]").click()
    full = get_strategy("full").default_sweep.steps
    assert steps.get_attribute("placeholder") == (
        f"linear: {', '.join(map(str, linear))}; full: {', '.join(map(str, full))}"  # the form's order
    )
    assert "500" not in steps.get_attribute("placeholder") or 500 in full or 500 in linear
