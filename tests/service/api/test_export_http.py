"""GET /api/v1/ensembles/{id}/export: the same one-file ensemble `zooens export` writes, loadable and
predicting what POST /ensembles/{id}/predict answers."""

from __future__ import annotations

import numpy as np
import pytest

import zooens
from tests.service._tiny import fit_tiny, register_tiny_zoo
from tests.service.api.conftest import png_bytes
from zooens.ensemble import read_bundle


@pytest.mark.slow
def test_export_downloads_a_file_that_predicts_as_the_api(client, tmp_path):
    from zooens.settings import get_settings

    register_tiny_zoo(get_settings().home / "weights", ["tiny-resnet"])
    fitted = fit_tiny()
    response = client.get(f"/api/v1/ensembles/{fitted.ensemble_id}/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert f"ensemble-{fitted.ensemble_id}.zooens" in response.headers["content-disposition"]
    path = tmp_path / "download.zooens"
    path.write_bytes(response.content)
    assert read_bundle(path).metadata["ensemble_id"] == fitted.ensemble_id
    assert not list((get_settings().home / "exports").iterdir())  # the temporary file is gone

    images = [png_bytes(i, size=24) for i in range(3)]
    answer = client.post(
        f"/api/v1/ensembles/{fitted.ensemble_id}/predict",
        files=[("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)],
    ).json()
    api = np.array([[row["probabilities"][c] for c in answer["classes"]] for row in answer["data"]])
    for i, data in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(data)
    loaded = zooens.load(str(path)).predict_proba([str(tmp_path / f"{i}.png") for i in range(3)])
    np.testing.assert_allclose(loaded, api, atol=1e-5)

    reference = client.get(f"/api/v1/ensembles/{fitted.ensemble_id}/export", params={"weights": "reference"})
    assert reference.status_code == 200 and len(reference.content) < len(response.content)
    assert client.get("/api/v1/ensembles/999/export").status_code == 404
