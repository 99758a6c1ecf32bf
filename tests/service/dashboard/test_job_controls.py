"""The Job page while a real job runs (headless Chromium, a live server and its worker): readable progress, a page
no wider than the window at 1280 and 1920 px, and the controls (Cancel, Resume, Retry, Delete) acting through the
API; then the plots, dataset names and the compare view on a small finished job.

Screenshots go where the other browser tests put theirs, the `screenshots` folder ($ZOOENS_TEST_ARTIFACTS/screenshots,
else the repository's git-ignored artifacts/screenshots), under names no other test uses (test_pages.py writes
job-finished.png and compare-{width}.png of its own job); their paths are printed."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

from tests.service.dashboard.test_pages import OVERFLOW_SCRIPT, console_errors, open_page, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTHS = (1280, 1920)
LONG_STEPS = 5000
"""`full` fine-tuning steps of the running job: far more than the test waits for (it is cancelled)."""


@pytest.fixture(scope="module")
def shots(screenshots):
    """`shots(driver, name)` saves the window as `name`.png in the `screenshots` folder and prints its path."""
    saved: list[str] = []

    def save(driver, name: str) -> str:
        path = str(screenshots / f"{name}.png")
        driver.save_screenshot(path)
        saved.append(path)
        print(f"screenshot: {path}")
        return path

    yield save
    print("screenshots saved:\n  " + "\n  ".join(saved))


def _api(live_server, method: str, path: str, body: dict | None = None):
    headers = {"Authorization": f"Bearer {live_server.token}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(live_server.url + "/api/v1" + path, data, headers, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def _set_width(driver, width: int) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
    )


def _status(driver) -> str | None:
    return driver.execute_script("return document.body.dataset.jobStatus || null")


def _buttons(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#job-actions button')).filter((b) => b.offsetParent !== null)"
        ".map((b) => b.dataset.action);"
    )


@pytest.fixture(scope="module")
def dataset_id(browser, live_server, digits_zip, shots):
    """digits-controls, uploaded through the Submit form with a small job whose form fields (k, n_train/n_val,
    augmentation, preprocessing, small_classes) must reach the job's parameters."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    open_page(driver, live_server.url + "/dashboard/submit", "#submit-form")
    form = driver.find_element(By.ID, "submit-form")
    form.find_element(By.NAME, "token").send_keys(live_server.token)
    form.find_element(By.NAME, "dataset_file").send_keys(str(digits_zip))
    form.find_element(By.NAME, "dataset_name").send_keys("digits-controls")
    for name, value in (
        ("zoo", "user"),
        ("top_k", "2"),
        ("learning_rates", "0.1, 1.0"),
        ("steps", "30"),
        ("ensemble_size", "6"),
        ("resolution", "32"),
        ("k", "3"),
        ("n_train", "400"),
        ("n_val", "100"),
    ):
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    for name, value in (("augmentation", "none"), ("preprocessing", "resize"), ("small_classes", "warn")):
        Select(form.find_element(By.NAME, name)).select_by_value(value)
    shots(driver, "submit-form")
    form.find_element(By.ID, "submit-button").click()
    wait_for(driver, lambda d: "/dashboard/jobs/" in d.current_url, timeout=120, what="the job page after submit")
    job_id = int(driver.current_url.rstrip("/").rsplit("/", 1)[1])
    job = _api(live_server, "GET", f"/jobs/{job_id}")
    params = job["params"]
    assert (params["k"], params["n_train"], params["n_val"]) == (3, 400, 100)
    assert (params["augmentation"], params["preprocessing"], params["small_classes"]) == ("none", "resize", "warn")
    wait_for(driver, lambda d: _status(d) in ("succeeded", "failed", "cancelled"), timeout=420, what="the small job")
    assert _status(driver) == "succeeded", driver.find_element(By.ID, "job-error").text
    live_server.small_job = job_id
    return job["dataset_id"]


def test_plots_start_at_zero_count_words_and_name_the_dataset(browser, live_server, dataset_id, shots):
    from selenium.webdriver.common.by import By

    driver, job_id = browser, live_server.small_job
    open_page(driver, live_server.url + f"/dashboard/jobs/{job_id}", "#curve-plot svg.main-svg")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#front-plot svg.main-svg"), what="the cost front")
    # the dataset by name (its id only in the tooltip), here and on the Jobs page
    link = driver.find_element(By.CSS_SELECTOR, "#job-facts dd[data-param='dataset'] a")
    assert link.text == "digits-controls" and link.get_attribute("title") == f"dataset #{dataset_id}"
    # cross-entropy axes start at 0
    for plot, axis in (("curve-plot", "yaxis"), ("front-plot", "yaxis")):
        lo, hi = driver.execute_script(f"return document.getElementById('{plot}')._fullLayout.{axis}.range")
        assert lo == 0 and hi > 0, (plot, lo, hi)
    # points at an axis's end are drawn whole: no trace is clipped to the plot area
    for plot in ("scatter-plot", "curve-plot", "front-plot"):
        clipped = driver.execute_script(
            f"return document.getElementById('{plot}').data.filter((t) => t.cliponaxis !== false).map((t) => t.name)"
        )
        assert clipped == [], (plot, clipped)
    # counts with the right word
    note = driver.find_element(By.ID, "front-note").text
    ens = _api(live_server, "GET", f"/jobs/{job_id}/ensemble")
    n_path, n_front = len(ens["front"]["path"]), len(ens["front"]["front"])
    assert (f"{n_path} prefix of" if n_path == 1 else f"{n_path} prefixes of") in note
    assert (f"{n_front} budget on" if n_front == 1 else f"{n_front} budgets on") in note
    assert " 1 budgets" not in note and " 1 prefixes" not in note
    # the ensemble counts distinct runs, and says how many greedy picks it took
    size = driver.find_element(By.ID, "ensemble-size")
    assert int(size.get_attribute("data-runs")) == len({m["run_id"] for m in ens["members"]})
    assert int(size.get_attribute("data-picks")) == ens["size"]
    # kNN@1 beside kNN@k in the ranking, from the stored scores
    ranking = _api(live_server, "GET", f"/jobs/{job_id}/ranking")
    shown = driver.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('#ranking-table tbody tr'))"
        ".map((tr) => [tr.dataset.model, tr.querySelector(\"td[data-key='knn1_accuracy']\").dataset.sort]));"
    )
    assert {r["model_name"]: float(shown[r["model_name"]]) for r in ranking} == {
        r["model_name"]: pytest.approx(r["knn1_accuracy"]) for r in ranking
    }
    header = driver.find_element(By.CSS_SELECTOR, "#ranking-table th[data-key='knn_accuracy']").text
    assert header == "kNN@3"  # the job's k, as submitted
    shots(driver, "job-plots")  # not job-finished: test_pages.py saves that one
    # the rules themselves: one cost is not stretched over ±1 %; plurals; unit keys in words
    lo, hi = driver.execute_script("return costRange([0.0123])")
    assert lo == 0 and hi == pytest.approx(0.0123 * 1.25)
    assert driver.execute_script("return costRange([1, 2])") == pytest.approx([0.94, 2.06])
    assert driver.execute_script(
        "return [plural(1, 'budget'), plural(2, 'budget'), plural(1, 'prefix', 'prefixes')]"
    ) == [
        "1 budget",
        "2 budgets",
        "1 prefix",
    ]
    assert (
        driver.execute_script("return unitWords('finetune:convnext_tiny.fb_in1k:lora:lr=0.001:steps=500')")
        == "fine-tuning convnext_tiny.fb_in1k (lora, learning rate 0.001, 500 steps)"
    )
    assert driver.execute_script("return unitWords('embed:tiny-resnet')") == "embedding tiny-resnet"
    # runs told apart by the short hyper-parameters that differ, not by every recorded detail
    runs = [
        {"hparams": {"lr": 0.1, "steps": 30, "seed": 0, "C": 3.16227766, "c_grid": [1, 10], "batch_size": 64}},
        {"hparams": {"lr": 1.0, "steps": 30, "seed": 0, "C": 1.0, "c_grid": [1, 10], "batch_size": 64}},
    ]
    keys = driver.execute_script("return distinguishingKeys(arguments[0])", runs)
    assert keys == ["lr", "steps", "C"]
    texts = driver.execute_script("return arguments[0].map((r) => hparamsText(r.hparams, arguments[1]))", runs, keys)
    assert texts == ["lr 0.1, 30 steps, C=3.16", "lr 1, 30 steps, C=1"]
    assert console_errors(driver) == []


def test_eta_is_estimated_per_unit_kind(browser, live_server, dataset_id):
    driver = browser
    open_page(driver, live_server.url + f"/dashboard/jobs/{live_server.small_job}", "#stages [data-stage='embed']")
    job = {"progress": {"embed": {"done": 2, "total": 4}, "finetune": {"done": 0, "total": 0}}}
    ranking = [{"embed_seconds": 3.0}, {"embed_seconds": 5.0}, {"embed_seconds": None}]
    eta = driver.execute_script("return estimateLeft(arguments[0], arguments[1], [])", job, ranking)
    assert eta == {"seconds": 8.0, "basis": 2, "missing": "finetune"}  # 2 models left at 4 s; runs not planned
    job = {"progress": {"embed": {"done": 4, "total": 4}, "finetune": {"done": 2, "total": 6}}}
    runs = [{"seconds": 10.0}, {"seconds": 30.0}]
    eta = driver.execute_script("return estimateLeft(arguments[0], arguments[1], arguments[2])", job, ranking, runs)
    assert eta == {"seconds": 80.0, "basis": 2, "missing": None}  # 4 runs left at 20 s; embedding done
    job = {"progress": {"embed": {"done": 4, "total": 4}, "finetune": {"done": 0, "total": 2}}}
    eta = driver.execute_script("return estimateLeft(arguments[0], arguments[1], [])", job, ranking)
    assert eta == {"seconds": None, "basis": 0, "missing": "finetune"}
    # what is left counted by strategy (the worker writes `left`): each strategy timed by its own runs
    job = {
        "progress": {
            "embed": {"done": 4, "total": 4},
            "finetune": {"done": 3, "total": 8, "left": {"linear": 2, "film": 3}},
        }
    }
    runs = [
        {"strategy": "linear", "seconds": 2.0},
        {"strategy": "linear", "seconds": 4.0},
        {"strategy": "film", "seconds": 60.0},
    ]
    eta = driver.execute_script("return estimateLeft(arguments[0], arguments[1], arguments[2])", job, ranking, runs)
    assert eta == {"seconds": 2 * 3.0 + 3 * 60.0, "basis": 3, "missing": None}  # a mean over all would say 5 x 22
    job["progress"]["finetune"]["left"] = {"linear": 2, "lora": 1}  # no lora run finished: a lower bound
    eta = driver.execute_script("return estimateLeft(arguments[0], arguments[1], arguments[2])", job, ranking, runs)
    assert eta == {"seconds": 6.0, "basis": 2, "missing": "finetune"}


@pytest.fixture(scope="module")
def running_job(live_server, dataset_id):
    """A job held running by the live server's worker: `full` fine-tuning for far more steps than the test waits."""
    job = _api(
        live_server,
        "POST",
        "/jobs",
        {
            "dataset_id": dataset_id,
            "zoo": "user",
            "top_k": 1,
            "strategies": ["full"],
            "learning_rates": [0.01],
            "steps": [LONG_STEPS],
            "ensemble_size": 1,
            "resolution": 32,
            "n_train": 400,
            "n_val": 100,
        },
    )
    yield job["id"]
    for job_id in {job["id"], getattr(live_server, "cancelled_job", job["id"])}:  # never left running
        try:
            _api(live_server, "POST", f"/jobs/{job_id}/cancel", {})
        except urllib.error.HTTPError:  # 409: finished (or 404: deleted) already
            pass


def test_running_job_page_fits_and_shows_its_controls_at_1280_and_1920(browser, live_server, running_job, shots):
    """While the job runs: Cancel only, the unit in words with an ETA, and no element wider than the window."""
    from selenium.webdriver.common.by import By

    driver = browser
    url = live_server.url + f"/dashboard/jobs/{running_job}"
    open_page(driver, url, "#stages [data-stage='finetune']")
    wait_for(
        driver,
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#stages [data-stage='finetune'][data-unit^='finetune:']")
            and _status(d) == "running"
        ),
        timeout=300,
        what="the job to start fine-tuning",
    )
    try:
        for width in WIDTHS:
            _set_width(driver, width)
            open_page(driver, url, "#stages [data-stage='finetune'][data-unit^='finetune:']")
            # the status is set once a refresh has finished, the buttons earlier in it: wait for both
            wait_for(
                driver,
                lambda d: _buttons(d) == ["cancel"] and _status(d) == "running",
                what="the Cancel button on the running job",
            )
            assert driver.execute_script("return window.innerWidth") == width
            # the page is no wider than the window, and every card, table and plot fits
            page = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            assert page[0] <= page[1], f"the page is {page[0]} px wide in a {page[1]} px window"
            assert driver.execute_script(OVERFLOW_SCRIPT) == [], f"job page at {width} px"
            # the stage and the unit in words: model, strategy, learning rate, steps; never the unit key
            now = driver.find_element(By.ID, "job-now").text
            assert now.startswith("Now fine-tuning tiny-") and f"(full, learning rate 0.01, {LONG_STEPS} steps)" in now
            stages = driver.find_element(By.ID, "stages").text
            assert "finetune:" not in stages and "lr=" not in stages and "learning rate 0.01" in stages
            # every entry embedded: the 3 models and their layer taps (`taps` auto, the default)
            embedded = driver.find_element(By.CSS_SELECTOR, "#stages [data-stage='embed']").text
            assert re.match(r"model (\d+) of \1 embedded", embedded) and int(embedded.split()[1]) > 3, embedded
            eta = driver.find_element(By.ID, "job-eta").text
            assert eta.startswith("Running for ") and "Time left:" in eta
            assert driver.find_element(By.ID, "job-ended").text == ""  # nothing ended
            dataset = driver.find_element(By.CSS_SELECTOR, "#job-facts dd[data-param='dataset'] a").text
            assert dataset == "digits-controls"
            shots(driver, f"job-running-{width}")
            assert console_errors(driver) == []
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_cancel_resume_retry_and_delete_from_the_job_page(browser, live_server, running_job, shots):
    from selenium.webdriver.common.by import By

    driver, url = browser, live_server.url + f"/dashboard/jobs/{running_job}"
    open_page(driver, url, "#job-actions button[data-action='cancel']")
    assert driver.execute_script("return localStorage.getItem('zooens.token')") == live_server.token
    driver.find_element(By.ID, "cancel-button").click()
    wait_for(driver, lambda d: _status(d) == "cancelled", timeout=120, what="the job to end cancelled")
    wait_for(driver, lambda d: _buttons(d) == ["resume", "retry", "delete"], what="the controls of a cancelled job")
    assert _api(live_server, "GET", f"/jobs/{running_job}")["status"] == "cancelled"
    # how it ended and what to do next
    ended = driver.find_element(By.ID, "job-ended-text")
    assert ended.get_attribute("data-ended") == "cancelled"
    text = ended.text
    assert text.startswith("Cancelled") and re.search(r"embedding (\d+) of \1\b", text), text
    assert "Resume runs only the unfinished units" in text and "Retry" in text and "Delete" in text
    assert driver.find_element(By.ID, "job-now").text == ""  # not "Now fine-tuning …" any more
    shots(driver, "job-cancelled")

    # Resume: the same job back in the queue, its finished units kept; then cancel it again
    driver.find_element(By.ID, "resume-button").click()
    wait_for(driver, lambda d: _status(d) in ("queued", "running"), timeout=60, what="the resumed job")
    wait_for(driver, lambda d: "cancel" in _buttons(d), what="Cancel on the resumed job")
    assert _api(live_server, "GET", f"/jobs/{running_job}")["status"] in ("queued", "running")
    driver.find_element(By.ID, "cancel-button").click()
    wait_for(driver, lambda d: _status(d) == "cancelled", timeout=120, what="the resumed job to end cancelled")

    # Retry: a new job with the same parameters, and its page
    wait_for(driver, lambda d: "retry" in _buttons(d), what="Retry")
    driver.find_element(By.ID, "retry-button").click()
    wait_for(driver, lambda d: d.current_url.rstrip("/") != url, timeout=60, what="the retried job's page")
    new_id = int(driver.current_url.rstrip("/").rsplit("/", 1)[1])
    assert new_id != running_job
    old, new = _api(live_server, "GET", f"/jobs/{running_job}"), _api(live_server, "GET", f"/jobs/{new_id}")
    assert new["params"] == old["params"] and new["dataset_id"] == old["dataset_id"]
    open_page(driver, driver.current_url, "#job-actions button[data-action='cancel']")
    driver.find_element(By.ID, "cancel-button").click()
    wait_for(driver, lambda d: _status(d) == "cancelled", timeout=120, what="the retried job to end cancelled")

    # Delete (after a confirmation): back to the Jobs page, the job gone from the API
    open_page(driver, url, "#job-actions button[data-action='delete']")
    driver.find_element(By.ID, "delete-button").click()
    driver.switch_to.alert.accept()
    wait_for(driver, lambda d: d.current_url.rstrip("/").endswith("/dashboard/jobs"), what="the Jobs page")
    with pytest.raises(urllib.error.HTTPError) as info:
        _api(live_server, "GET", f"/jobs/{running_job}")
    assert info.value.code == 404
    assert console_errors(driver) == []
    live_server.cancelled_job = new_id


def test_actions_without_a_token_say_how_to_get_one(browser, live_server, dataset_id):
    from selenium.webdriver.common.by import By

    driver = browser
    job_id = live_server.small_job
    open_page(driver, live_server.url + f"/dashboard/jobs/{job_id}", "#job-actions button[data-action='retry']")
    token = driver.execute_script(
        "const t = localStorage.getItem('zooens.token'); localStorage.removeItem('zooens.token'); return t;"
    )
    try:
        driver.find_element(By.ID, "retry-button").click()
        wait_for(driver, lambda d: d.find_element(By.ID, "action-result").text, what="the error")
        assert "needs an API token" in driver.find_element(By.ID, "action-result").text
        assert "zooens tokens create" in driver.find_element(By.ID, "action-result").text
        assert driver.current_url.rstrip("/").endswith(f"/dashboard/jobs/{job_id}")  # no new job
    finally:
        driver.execute_script("localStorage.setItem('zooens.token', arguments[0])", token)


def test_compare_counts_distinct_runs_and_tells_runs_apart(browser, live_server, dataset_id, shots):
    from selenium.webdriver.common.by import By

    driver = browser
    other = getattr(live_server, "cancelled_job", None)
    if other is None:  # this test alone: a second job, cancelled while queued
        other = _api(live_server, "POST", "/jobs", {"dataset_id": dataset_id, "zoo": "user", "top_k": 1})["id"]
        _api(live_server, "POST", f"/jobs/{other}/cancel", {})
    small = live_server.small_job
    try:
        for width in WIDTHS:
            _set_width(driver, width)
            open_page(driver, live_server.url + f"/dashboard/compare?jobs={small},{other}", "body[data-loaded]")
            ens = _api(live_server, "GET", f"/jobs/{small}/ensemble")
            section = driver.find_element(By.CSS_SELECTOR, f"section[data-job-id='{small}']")
            rows = section.find_elements(By.CSS_SELECTOR, "table.members tbody tr")
            runs = {m["run_id"] for m in ens["members"]}
            assert len(rows) == len(runs)
            title = section.find_element(By.CSS_SELECTOR, "h3.ensemble-title")
            assert int(title.get_attribute("data-runs")) == len(rows)
            assert title.text.startswith(f"Ensemble of {len(runs)} run")
            if ens["size"] != len(runs):
                assert f"({ens['size']} greedy picks)" in title.text
            # runs of one model and strategy told apart by their hyper-parameters
            hparams = [r.find_element(By.CSS_SELECTOR, "td[data-key='hparams']").text for r in rows]
            keyed = [
                (r.find_elements(By.TAG_NAME, "td")[0].text, r.find_elements(By.TAG_NAME, "td")[1].text, h)
                for r, h in zip(rows, hparams, strict=True)
            ]
            assert all(h.startswith("lr ") and " steps" in h for h in hparams), hparams
            assert all("c_grid" not in h and "val_ce_path" not in h and len(h) < 80 for h in hparams), hparams
            assert len(set(keyed)) == len(keyed), keyed
            # datasets by name
            names = {a.text for a in driver.find_elements(By.CSS_SELECTOR, "#compare-table a.dataset-link")}
            assert names == {"digits-controls"}
            assert driver.execute_script(OVERFLOW_SCRIPT) == [], f"compare at {width} px"
            shots(driver, f"compare-runs-{width}")  # not compare-{width}: test_pages.py saves those
        # the Jobs page names the dataset too, with no "#id" beside it
        open_page(driver, live_server.url + "/dashboard/jobs", f"#jobs-table tr[data-job-id='{small}'] a.dataset-link")
        cell = driver.find_element(By.CSS_SELECTOR, f"#jobs-table tr[data-job-id='{small}'] a.dataset-link")
        assert cell.text == "digits-controls"
        assert console_errors(driver) == []
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


FOLDS_SCRIPT = """
const midWord = [], folded = [];
for (const td of document.querySelectorAll(arguments[0])) {
  const tops = new Set();
  const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.textContent) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    const rects = Array.from(range.getClientRects()).filter((r) => r.width > 0);
    if (rects.length > 1) midWord.push(td.textContent);
    rects.forEach((r) => tops.add(Math.round(r.top)));
  }
  if (tops.size > 1) folded.push(td.textContent);
}
return [midWord, folded, document.querySelectorAll(arguments[0]).length];
"""
"""Model-name cells whose text folds inside a piece between separators (each piece is its own text node, see
`breakable`), and those that take more than one line."""


def test_model_names_never_fold_mid_word_and_use_the_width_at_1920(browser, live_server, dataset_id, shots):
    driver = browser
    pages = [
        ("zoo", "/dashboard/zoo?per_page=100", "#zoo-table tbody tr", "#zoo-table td.name"),
        (
            "job",
            f"/dashboard/jobs/{live_server.small_job}",
            "#runs-table tbody tr",
            "#ranking-table td.name, #runs-table td.name, #members-table td.name",
        ),
    ]
    try:
        for width in WIDTHS:
            _set_width(driver, width)
            for name, path, ready, cells in pages:
                open_page(driver, live_server.url + path, ready)
                mid_word, folded, count = driver.execute_script(FOLDS_SCRIPT, cells)
                assert count > 0, (name, cells)
                assert mid_word == [], f"{name} at {width} px folds names mid-word: {mid_word[:5]}"
                if width == 1920:
                    assert folded == [], f"{name} at 1920 px folds names: {folded[:5]}"
                assert driver.execute_script(OVERFLOW_SCRIPT) == [], f"{name} at {width} px"
                shots(driver, f"{name}-names-{width}")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
