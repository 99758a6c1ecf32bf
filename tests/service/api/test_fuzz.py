"""A schema-driven fuzz of the API (schemathesis against our OpenAPI document), on SQLite and
PostgreSQL: no 5xx, and every error answer is JSON with a reason.

The registry is seeded first (a dataset, a queued job, a token) so that generated ids hit
real rows as well as missing ones. Generation is derandomised (the same examples every run)
and needs no network: the app runs in-process through its ASGI interface.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from tests.service.api.conftest import imagefolder_zip

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES_PER_OPERATION = 200


def _seed(client, auth) -> None:
    ds = client.post(
        "/api/v1/datasets",
        headers=auth,
        files={"file": ("seed.zip", imagefolder_zip({"a": 3, "b": 3}), "application/zip")},
    )
    assert ds.status_code == 201, ds.text
    job = client.post("/api/v1/jobs", headers=auth, json={"dataset_id": ds.json()["id"], "zoo": "embedded"})
    assert job.status_code in (202, 422), job.text


def _problem(response) -> str | None:
    """Why an answer is not acceptable, or None."""
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.text[:200]}"
    content_type = response.headers.get("content-type") or [""]
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if response.status_code >= 400 and content_type.startswith("application/json"):
        try:
            body = json.loads(response.content)
        except ValueError:
            return "an error answer that is not valid JSON"
        if not isinstance(body, dict) or "detail" not in body:
            return f"an error answer without 'detail': {response.text[:200]}"
    return None


@pytest.mark.slow
def test_no_server_errors_for_any_generated_request(client, auth):
    _seed(client, auth)
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
            print_blob=False,
        )
        @given(case=operation.as_strategy())
        def run(case) -> None:
            case.headers = {**(case.headers or {}), **auth}
            try:
                response = case.call()
            except Exception as exc:  # the in-process transport re-raises what the app did not handle
                problem = f"unhandled {type(exc).__name__}: {str(exc)[:200]}"
            else:
                problem = _problem(response)
            if problem is not None and len(failures) < 50:
                failures.append(f"{case.method} {case.formatted_path} -> {problem}")

        run()
    assert operations >= 10  # the whole API was fuzzed, not an empty schema
    assert failures == [], "\n".join(failures)
