"""A schema-driven fuzz of the API (schemathesis against our OpenAPI document): no 5xx."""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")


@pytest.mark.slow
def test_no_server_errors_for_any_generated_request(client, auth):
    from hypothesis import HealthCheck, settings
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    failures: list[str] = []
    for op in schema.get_all_operations():
        operation = op.ok()

        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        def run(case):
            case.headers = {**(case.headers or {}), **auth}
            response = case.call()
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}")

        operation.as_strategy()
        from hypothesis import given

        given(operation.as_strategy())(run)()
    assert failures == []
