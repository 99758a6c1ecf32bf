"""Dashboard pages read as HTML through the app, no browser: the Submit form's fields map to `JobParams`, the
strategies come in a sensible order, and model names wrap at their separators, never mid-word."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Literal, get_args, get_origin

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from zooens.pipeline.params import JobParams
from zooens.service.dashboard import router
from zooens.service.dashboard.router import STRATEGY_ORDER, SUBMIT_FIELDS, breakable, ordered_strategies


@pytest.fixture
def client(zooens_home) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


class _Form(HTMLParser):
    """The form controls of a page: name -> {tag, attrs, options: [(value, selected)]}; strategies in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: dict[str, dict] = {}
        self.strategies: list[str] = []
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("name") == "strategy":
            self.strategies.append(a["value"])
        elif tag in ("input", "select") and a.get("name"):
            self.controls[a["name"]] = {"tag": tag, "attrs": a, "options": []}
            self._select = a["name"] if tag == "select" else None
        elif tag == "option" and self._select:
            self.controls[self._select]["options"].append((a.get("value"), "selected" in a))

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


def _form(client) -> _Form:
    resp = client.get("/dashboard/submit")
    assert resp.status_code == 200
    parsed = _Form()
    parsed.feed(resp.text)
    return parsed


def test_submit_form_has_a_field_for_each_jobparams_field_it_names(client):
    form = _form(client)
    assert set(SUBMIT_FIELDS) == {"k", "n_train", "n_val", "augmentation", "preprocessing", "small_classes", "taps"}
    for name in SUBMIT_FIELDS:
        assert name in JobParams.model_fields, f"{name} is not a JobParams field"
        control = form.controls[name]
        info = JobParams.model_fields[name]
        # the page's default is the API's: a field left alone is not sent, an edited one is (submit.js)
        assert control["attrs"]["data-default"] == str(info.default), name
        if get_origin(info.annotation) is Literal:
            assert control["tag"] == "select"
            assert [v for v, _ in control["options"]] == [str(c) for c in get_args(info.annotation)]
            assert [v for v, selected in control["options"] if selected] == [str(info.default)]
        else:
            assert control["attrs"]["value"] == str(info.default)
    # the help text is the field's own description
    assert JobParams.model_fields["small_classes"].description[:40] in client.get("/dashboard/submit").text


def test_submit_form_orders_strategies_auto_first_cheapest_to_full(client):
    form = _form(client)
    shown = form.strategies
    assert shown[0] == "auto" and shown[-1] == "full"
    assert shown.index("linear") < shown.index("lora") < shown.index("full")
    assert sorted(shown) == sorted(set(shown))
    # one row of check boxes: all in one flex container, not nested labels inside a label
    html = client.get("/dashboard/submit").text
    group = re.search(r'<div class="choices" id="strategies">(.*?)</div>', html, re.S)
    assert group and group.group(1).count('name="strategy"') == len(shown)


def test_ordered_strategies_puts_unknown_ones_before_the_costliest():
    assert ordered_strategies(["full", "zeta", "linear", "auto", "aft", "alpha"]) == [
        "auto",
        "linear",
        "alpha",
        "zeta",
        "aft",
        "full",
    ]
    assert ordered_strategies(["linear"]) == ["linear"]
    assert list(STRATEGY_ORDER[:2]) == ["auto", "linear"]


def _pieces(html: str) -> list[list[str]]:
    """The dot-separated parts of a `breakable` name, each as its pieces between <wbr>."""
    parts = re.findall(r'<span class="name-part">(.*?)</span>', html)
    assert "".join(f'<span class="name-part">{p}</span>' for p in parts) == html.replace(
        "</span><wbr><span", "</span><span"
    )
    return [p.split("<wbr>") for p in parts]


def test_breakable_wraps_at_separators_dots_first_and_escapes():
    assert _pieces(str(breakable("convnext_tiny.fb_in22k"))) == [["convnext_", "tiny."], ["fb_", "in22k"]]
    assert _pieces(str(breakable("resnet50"))) == [["resnet50"]]
    assert _pieces(str(breakable("<b>x.y"))) == [["&lt;b&gt;x."], ["y"]]
    assert _pieces(str(breakable("m@stage3"))) == [["m@"], ["stage3"]]


def test_zoo_page_names_wrap_only_at_separators(client):
    html = client.get("/dashboard/zoo?q=vit_base_patch16_224&per_page=25").text
    cells = re.findall(r'<td data-key="name" class="name">(.*?)</td>', html)
    assert cells, "the catalogue lists ViT-B/16 weight sets"
    for cell in cells:
        parts = _pieces(cell)
        assert len(parts) >= 2, cell  # "vit_base_patch16_224." and its pretraining tag
        for part in parts:  # every piece ends at a separator, or ends its part
            assert all(piece[-1] in "._-/@:" for piece in part[:-1]), cell


def test_job_page_has_the_controls_progress_and_eta_slots(client):
    html = client.get("/dashboard/jobs/5").text
    for slot in ('id="job-actions"', 'id="job-ended"', 'id="job-now"', 'id="job-eta"', 'id="stages"'):
        assert slot in html, slot
    assert "kNN@1" in html
