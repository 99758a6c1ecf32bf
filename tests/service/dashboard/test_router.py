"""Dashboard routes without a browser: pages render, plotly.js is served from the package, zoo filters."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from zooens.service.dashboard import router
from zooens.service.dashboard.router import ZooRow, architecture_family, filter_zoo


@pytest.fixture
def client(zooens_home) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


@pytest.mark.parametrize(
    "page", ["/", "/dashboard/jobs", "/dashboard/jobs/7", "/dashboard/submit", "/dashboard/datasets"]
)
def test_pages_render(client, page):
    resp = client.get(page)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert "/dashboard/static/common.js" in resp.text


def test_plotly_js_comes_from_the_installed_package(client):
    from pathlib import Path

    import plotly

    resp = client.get("/dashboard/static/plotly.min.js")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/javascript")
    assert resp.content == (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    assert 'src="/dashboard/static/plotly.min.js"' in client.get("/dashboard/jobs/1").text
    assert "cdn" not in client.get("/dashboard/jobs/1").text.lower()


def test_static_files_refuse_unknown_names(client):
    assert client.get("/dashboard/static/job.js").status_code == 200
    assert client.get("/dashboard/static/nope.js").status_code == 404
    assert client.get("/dashboard/static/..%2Frouter.py").status_code == 404


def test_dashboard_routes_stay_out_of_the_openapi_document(client):
    assert not any(p == "/" or p.startswith("/dashboard") for p in client.app.openapi()["paths"])


@pytest.mark.parametrize(
    "arch, family",
    [
        ("tf_efficientnet_lite0", "efficientnet"),
        ("resnet50d", "resnet"),
        ("mobilenetv3_small_100", "mobilenetv3"),
        ("convnextv2_atto", "convnextv2"),
        ("vit_base_patch16_224", "vit"),
        ("test_convnext", "convnext"),
        ("regnety_040", "regnety"),
    ],
)
def test_architecture_family(arch, family):
    assert architecture_family(arch) == family


def test_filter_zoo():
    rows = [
        ZooRow("a.x", "resnet18", "resnet", "catalogue", 224, 11_700_000, 512, False, None),
        ZooRow("b.y", "resnet50", "resnet", "catalogue", 288, None, None, False, None),
        ZooRow("tiny", "test_vit", "vit", "user", 160, 200_000, 64, True, None),
    ]
    assert [r.name for r in filter_zoo(rows, family="resnet")] == ["a.x", "b.y"]
    assert [r.name for r in filter_zoo(rows, q="RES 18")] == []
    assert [r.name for r in filter_zoo(rows, q="a.")] == ["a.x"]
    assert [r.name for r in filter_zoo(rows, weights="yes")] == ["tiny"]
    assert [r.name for r in filter_zoo(rows, weights="no", input_size=288)] == ["b.y"]
    assert [r.name for r in filter_zoo(rows, max_params_m=12)] == ["a.x", "tiny"]
    assert [r.name for r in filter_zoo(rows, min_params_m=1)] == ["a.x"]


def test_zoo_page_paginates_the_catalogue(client):
    first = client.get("/dashboard/zoo")
    assert first.status_code == 200 and first.text.count("<tr data-name") == 50
    page = client.get("/dashboard/zoo", params={"weights": "yes", "per_page": 25})
    assert 'data-name="tf_efficientnet_lite0.in1k"' in page.text
    assert client.get("/dashboard/zoo", params={"q": "no-such-model-xyz"}).text.count("<tr data-name") == 0
    assert client.get("/dashboard/zoo", params={"min_params": "abc", "page": 10_000}).status_code == 200
