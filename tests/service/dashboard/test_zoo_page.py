"""The Zoo page's catalogue facts, filters and pull buttons, and the static priors of the ranking audit on the job and
audit pages, in headless Chromium against a live server (a real pull from the hub stand-in, no network)."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime

import pytest

from tests.hub_stand_in import hub  # noqa: F401  the fixture
from tests.service.dashboard.test_pages import LAYOUT_WIDTHS, OVERFLOW_SCRIPT, console_errors, open_page, wait_for
from zooens.service.dashboard.router import PREDICTOR_LABELS, better_predictor, data_versus_prior
from zooens.zoo._facts import UPSTREAM_CATEGORIES

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PULLED = "test_vit.r160_in1k"
ZOO_COLUMNS = ("upstream", "params", "GFLOPs", "ImageNet top-1", "weights here")


def _width(driver, width: int) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
    )


def _rows(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#zoo-table tbody tr[data-name]")


def _cells(driver, key: str) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(`#zoo-table tbody td[data-key='${arguments[0]}']`))"
        ".map((td) => td.textContent.trim());",
        key,
    )


def _visible_pull_buttons(driver) -> int:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('button.pull-one, #pull-all'))"
        ".filter((b) => b.offsetParent !== null).length;"
    )


def _set_token(driver, base: str, token: str | None) -> None:
    open_page(driver, base + "/dashboard/submit", "#submit-form")
    if token:
        driver.execute_script("window.localStorage.setItem('zooens.token', arguments[0])", token)
    else:
        driver.execute_script("window.localStorage.removeItem('zooens.token')")


def _api_rows(live_server, **params) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in {"limit": 2000, **params}.items())
    return live_server.get_json("/api/v1/zoo?" + query)["data"]


def test_zoo_page_shows_the_facts_and_filters_without_overflow(browser, live_server, screenshots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, base = browser, live_server.url
    _set_token(driver, base, None)
    try:
        for width in LAYOUT_WIDTHS:
            _width(driver, width)
            open_page(driver, base + "/dashboard/zoo", "#zoo-table tbody tr")
            headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#zoo-table thead th")]
            for column in ZOO_COLUMNS:
                assert column in headers, (column, headers)
            options = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#zoo-upstream option")][
                1:
            ]
            assert set(options) <= set(UPSTREAM_CATEGORIES) and len(options) >= 5
            sets = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#zoo-set option")][1:]
            assert {"embedded", "user"} <= set(sets)
            assert driver.find_element(By.ID, "zoo-min-params") and driver.find_element(By.ID, "zoo-max-params")
            assert _visible_pull_buttons(driver) == 0, "no token: no pull button"
            assert driver.execute_script("return window.innerWidth") == width
            driver.save_screenshot(str(screenshots / f"zoo-facts-{width}.png"))
            assert driver.execute_script(OVERFLOW_SCRIPT) == [], f"zoo page at {width} px"
            assert console_errors(driver) == []
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # the page's cells are the API's facts
    open_page(driver, base + "/dashboard/zoo?origin=embedded", "#zoo-table tbody tr[data-name]")
    api = {r["name"]: r for r in _api_rows(live_server, set="embedded")}
    for row in _rows(driver):
        name = row.get_attribute("data-name")
        cell = lambda key, row=row: row.find_element(By.CSS_SELECTOR, f"td[data-key='{key}']")  # noqa: E731
        assert cell("upstream").text == api[name]["upstream"]
        assert float(cell("num_params").get_attribute("data-sort")) == api[name]["num_params"]
        assert float(cell("gflops").get_attribute("data-sort")) == pytest.approx(api[name]["gflops"])

    # the upstream select filters at once, like the API's filter
    open_page(driver, base + "/dashboard/zoo?per_page=200", "#zoo-table")
    Select(driver.find_element(By.ID, "zoo-upstream")).select_by_value("in21k")
    wait_for(driver, lambda d: "upstream=in21k" in d.current_url, what="the upstream filter")
    matched = int(driver.find_element(By.CSS_SELECTOR, "#zoo-count [data-matched]").get_attribute("data-matched"))
    assert matched == len(_api_rows(live_server, upstream="in21k")) > 0
    assert set(_cells(driver, "upstream")) == {"in21k"}

    # a zoo set
    open_page(driver, base + "/dashboard/zoo", "#zoo-table")
    Select(driver.find_element(By.ID, "zoo-set")).select_by_value("user")
    wait_for(driver, lambda d: "set=user" in d.current_url, what="the set filter")
    names = {r.get_attribute("data-name") for r in _rows(driver)}
    assert names == {"tiny-effnet", "tiny-resnet", "tiny-convnext"}

    # size bounds (millions) with the upstream
    open_page(driver, base + "/dashboard/zoo?min_params=0.2&max_params=0.3&set=user", "#zoo-table")
    assert {r.get_attribute("data-name") for r in _rows(driver)} == {"tiny-convnext"}
    assert console_errors(driver) == []


def test_pull_buttons_only_for_a_token_holder_and_a_real_pull(browser, live_server, hub, screenshots):  # noqa: F811
    from selenium.webdriver.common.by import By

    hub.add_timm_model(PULLED)
    driver, base = browser, live_server.url
    page = base + "/dashboard/zoo?q=test_vit"
    _set_token(driver, base, None)
    open_page(driver, page, "#zoo-table tbody tr[data-name]")
    assert _visible_pull_buttons(driver) == 0
    assert not driver.find_element(By.ID, "pull-panel").is_displayed()

    _set_token(driver, base, live_server.token)
    open_page(driver, page, "#zoo-table tbody tr[data-name]")
    without = [
        r.get_attribute("data-name")
        for r in _rows(driver)
        if r.find_element(By.CSS_SELECTOR, "td[data-weights]").get_attribute("data-weights") == "no"
    ]
    assert PULLED in without
    buttons = driver.find_elements(By.CSS_SELECTOR, "button.pull-one")
    assert sorted(b.get_attribute("data-model") for b in buttons if b.is_displayed()) == sorted(without)
    pull_all = driver.find_element(By.ID, "pull-all")
    assert pull_all.is_displayed() and sorted(pull_all.get_attribute("data-models").split()) == sorted(without)

    driver.find_element(By.CSS_SELECTOR, f"button.pull-one[data-model='{PULLED}']").click()
    wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#pull-status .pull-state[data-status='succeeded']"),
        timeout=120,
        what="the pull to succeed",
    )
    row = driver.find_element(By.CSS_SELECTOR, f"#zoo-table tr[data-name='{PULLED}']")
    assert row.find_element(By.CSS_SELECTOR, "td[data-weights]").get_attribute("data-weights") == "yes"
    status = driver.find_element(By.CSS_SELECTOR, "#pull-status .pull-state")
    assert "Pulled" in status.text and "1 pulled" in status.text
    driver.save_screenshot(str(screenshots / "zoo-pulled.png"))
    assert PULLED in {r["name"] for r in _api_rows(live_server, available="true")}
    # after a reload the page says so too (the catalogue was refreshed by the pull)
    open_page(driver, page, "#zoo-table tbody tr[data-name]")
    row = driver.find_element(By.CSS_SELECTOR, f"#zoo-table tr[data-name='{PULLED}']")
    assert row.find_element(By.CSS_SELECTOR, "td[data-weights]").get_attribute("data-weights") == "yes"
    assert not row.find_elements(By.CSS_SELECTOR, "button.pull-one")

    # a pull the server refuses (another model, no repository on the stand-in): the outcome says why
    other = [m for m in without if m != PULLED][0]
    driver.find_element(By.CSS_SELECTOR, f"button.pull-one[data-model='{other}']").click()
    wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#pull-status .pull-state[data-status='failed']"),
        timeout=120,
        what="the failed pull",
    )
    assert other in driver.find_element(By.CSS_SELECTOR, "#pull-status .pull-state[data-status='failed']").text
    assert console_errors(driver) == []
    _set_token(driver, base, None)


# --- the ranking audit's static priors on the job and audit pages ---


def _figures(spearman, kendall, regret, top_k_models, reason="constant input"):
    return {
        "n": 4,
        "spearman": {"value": spearman, "reason": None if spearman is not None else reason},
        "kendall": {"value": kendall, "reason": None if kendall is not None else reason},
        "top_k": 2,
        "top_k_models": top_k_models,
        "best_in_top_k": 0.9,
        "best_overall": 0.92,
        "regret": regret,
        "regret_reason": None if regret is not None else reason,
    }


AUDITS = [
    # data beats the priors: kNN rho 0.8 against ImageNet top-1 0.4
    {
        "knn": _figures(0.8, 0.67, 0.0, ["a", "b"]),
        "logme": _figures(0.4, 0.33, 0.02, ["a", "c"]),
        "imagenet_top1": _figures(0.4, 0.33, 0.02, ["c", "a"]),
        "num_params": _figures(-0.2, 0.0, 0.05, ["d", "c"]),
    },
    # the prior beats the data: parameter count rho 1.0
    {
        "knn": _figures(0.2, 0.0, 0.03, ["b", "d"]),
        "logme": _figures(None, None, 0.03, ["b", "d"]),
        "imagenet_top1": _figures(0.6, 0.33, 0.0, ["a", "c"]),
        "num_params": _figures(1.0, 1.0, 0.0, ["a", "b"]),
    },
]


def _page_errors(driver) -> list[dict]:
    """Console errors, less the 404 of the ensemble these hand-made jobs do not have (the page says so)."""
    return [e for e in console_errors(driver) if not (e.get("source") == "network" and "/ensemble" in e["message"])]


@pytest.fixture(scope="module")
def audited_jobs(live_server):
    """Two finished jobs with stored ranking audits of all four predictors (and a pull stage in their progress),
    written into the live server's registry."""
    from zooens.service.db.models import Dataset, Job
    from zooens.service.db.session import session_scope

    now = datetime.now(UTC)
    ids = []
    with session_scope() as s:
        ds = Dataset(
            name="priors-audit", source="/nowhere", fingerprint="f" * 64, classes=["x", "y"], counts={"train": {}}
        )
        s.add(ds)
        s.flush()
        for predictors in AUDITS:
            job = Job(
                dataset_id=ds.id,
                zoo="a,b,c,d",
                zoo_models=["a", "b", "c", "d"],
                params={"top_k": 2, "pull": True},
                status="succeeded",
                stage=None,
                progress={
                    "pull": {"done": 3, "total": 3, "current": None},
                    "embed": {"done": 4, "total": 4, "current": None},
                    "finetune": {"done": 4, "total": 4, "current": None},
                    "ensemble": {"done": 1, "total": 1, "current": None},
                },
                ranking_audit={
                    "predictors": predictors,
                    "audited_models": 4,
                    "finetuned_accuracy": {"a": 0.92, "b": 0.9, "c": 0.85, "d": 0.8},
                },
                created_at=now,
                started_at=now,
                finished_at=now,
            )
            s.add(job)
            s.flush()
            ids.append(job.id)
    return ids


def test_job_page_shows_the_static_priors_and_the_pull_stage(browser, live_server, audited_jobs, screenshots):
    from selenium.webdriver.common.by import By

    driver = browser
    try:
        for width in LAYOUT_WIDTHS:
            _width(driver, width)
            for job_id, predictors in zip(audited_jobs, AUDITS, strict=True):
                open_page(driver, live_server.url + f"/dashboard/jobs/{job_id}", "#audit-table tbody tr")
                rows = driver.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")
                assert [r.get_attribute("data-predictor") for r in rows] == list(PREDICTOR_LABELS)
                for row in rows:
                    name = row.get_attribute("data-predictor")
                    label = row.find_element(By.CSS_SELECTOR, "td[data-key='predictor']").text
                    assert label == PREDICTOR_LABELS[name]
                    rho = row.find_element(By.CSS_SELECTOR, "td[data-key='spearman']").get_attribute("data-value")
                    expected = predictors[name]["spearman"]["value"]
                    assert (rho == "") if expected is None else float(rho) == pytest.approx(expected)
                verdict = driver.find_element(By.ID, "audit-prior-verdict")
                expected = data_versus_prior(predictors)
                assert verdict.get_attribute("data-winner") == (expected["winner"] or "")
                assert verdict.get_attribute("data-data") == expected["data"]
                assert verdict.get_attribute("data-prior") == expected["prior"]
                if expected["winner"] == "data":
                    assert "paid off" in verdict.text and "did not" not in verdict.text
                else:
                    assert "did not pay off" in verdict.text
                better = driver.find_element(By.ID, "audit-verdict").get_attribute("data-better")
                assert better == (better_predictor(predictors) or "")
                stages = driver.find_elements(By.CSS_SELECTOR, "#stages [data-stage]")
                assert [s.get_attribute("data-stage") for s in stages][0] == "pull"
                assert stages[0].text == "model 3 of 3 fetched"
                driver.save_screenshot(str(screenshots / f"job-priors-{job_id}-{width}.png"))
                assert driver.execute_script(OVERFLOW_SCRIPT) == [], f"job page at {width} px"
                assert _page_errors(driver) == []
        # the page's rules are the router's
        for predictors in AUDITS:
            assert driver.execute_script("return dataVersusPrior(arguments[0])", predictors) == data_versus_prior(
                predictors
            )
        # a running pull: "model 1 of 3 fetched; now fetching <model>" (the unit key in words); a job without a
        # pull entry shows no pull stage
        text = driver.execute_script(
            "renderStages({status: 'running', stage: 'pull',"
            " progress: {pull: {done: 1, total: 3, current: 'pull:convnext_nano.in12k'}}});"
            "return document.querySelector(\"#stages [data-stage='pull']\").textContent;"
        )
        assert text == "model 1 of 3 fetched; now fetching convnext_nano.in12k"
        assert driver.find_element(By.ID, "job-now").text == "Now fetching convnext_nano.in12k."
        shown = driver.execute_script(
            "renderStages({progress: {embed: {done: 1, total: 2}}});"
            "return Array.from(document.querySelectorAll('#stages [data-stage]')).map((e) => e.dataset.stage);"
        )
        assert shown == ["embed", "finetune", "ensemble"]
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_audit_page_lists_the_static_priors_and_their_means(browser, live_server, audited_jobs, screenshots):
    from selenium.webdriver.common.by import By

    driver = browser
    audits = dict(zip(audited_jobs, AUDITS, strict=True))
    try:
        for width in LAYOUT_WIDTHS:
            _width(driver, width)
            open_page(
                driver, live_server.url + "/dashboard/audit", f"#audit-summary tr[data-job-id='{audited_jobs[0]}']"
            )
            groups = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#audit-summary th.group")]
            assert groups == list(PREDICTOR_LABELS.values())
            shown_jobs = [
                int(r.get_attribute("data-job-id"))
                for r in driver.find_elements(By.CSS_SELECTOR, "#audit-summary tbody tr")
            ]
            for job_id, predictors in audits.items():
                row = driver.find_element(By.CSS_SELECTOR, f"#audit-summary tbody tr[data-job-id='{job_id}']")
                for name in PREDICTOR_LABELS:
                    value = row.find_element(By.CSS_SELECTOR, f"td[data-key='{name}_spearman']").get_attribute(
                        "data-value"
                    )
                    expected = predictors[name]["spearman"]["value"]
                    assert (value == "") if expected is None else float(value) == pytest.approx(expected)
                versus = row.find_element(By.CSS_SELECTOR, "td[data-key='versus_prior']")
                assert versus.get_attribute("data-value") == (data_versus_prior(predictors)["winner"] or "")
            # the means over the jobs listed (only ours here: no other job has an audit in this server's registry
            # unless another test of this module wrote one)
            mean = driver.find_element(By.ID, "audit-mean")
            listed = [audits[j] for j in shown_jobs if j in audits]
            if len(shown_jobs) == len(listed):
                for name in ("imagenet_top1", "num_params"):
                    values = [p[name]["spearman"]["value"] for p in listed]
                    cell = mean.find_element(By.CSS_SELECTOR, f"td[data-key='{name}_spearman']")
                    assert float(cell.get_attribute("data-value")) == pytest.approx(sum(values) / len(values))
                versus = mean.find_element(By.CSS_SELECTOR, "td[data-key='versus_prior']")
                assert versus.get_attribute("data-data") == "1" and versus.get_attribute("data-prior") == "1"
            driver.save_screenshot(str(screenshots / f"audit-priors-{width}.png"))
            assert driver.execute_script(OVERFLOW_SCRIPT) == [], f"audit page at {width} px"
            assert console_errors(driver) == []
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_submit_form_sends_pull_and_lists_the_sets(browser, live_server):
    from selenium.webdriver.common.by import By

    driver = browser
    open_page(driver, live_server.url + "/dashboard/submit", "#submit-form")
    sets = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#zoo-sets option")]
    api_sets = live_server.get_json("/api/v1/zoo/sets")["sets"]
    assert set(api_sets) <= set(sets)
    checkbox = driver.find_element(By.ID, "pull")
    assert not checkbox.is_selected() and "hub" in driver.find_element(By.ID, "pull-label").text
    form = driver.find_element(By.ID, "submit-form")
    body = driver.execute_script("return jobBody(arguments[0], 1)", form)
    assert "pull" not in body
    checkbox.click()
    body = driver.execute_script("return jobBody(arguments[0], 1)", form)
    assert body["pull"] is True
    # the API takes it (a job with pull: true on a registered dataset is refused only for its dataset here)
    request = urllib.request.Request(
        live_server.url + "/api/v1/jobs",
        json.dumps({**body, "dataset_id": 2**31 - 1}).encode(),
        {"Authorization": f"Bearer {live_server.token}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 404  # the dataset, not the pull field
