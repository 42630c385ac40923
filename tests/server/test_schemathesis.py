"""Schemathesis against the server's /openapi.json: no input makes it answer 5xx.

Every operation in the schema gets a bounded number of generated cases
(positive and negative), sent over HTTP to a real server process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.support.local_server import LocalServer, running_server

EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def fuzzed_server() -> Iterator[LocalServer]:
    with running_server("--backend", "fake") as running:
        yield running


def test_no_generated_request_gets_a_server_error(fuzzed_server: LocalServer) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    seen: list[tuple[str, str, int]] = []

    for operation in operations:

        @given(case=operation.as_strategy() | operation.as_strategy(generation_mode=_negative()))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call(timeout=10)
            seen.append((case.method, case.path, response.status_code))
            assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
            content_type = response.headers.get("content-type", [""])[0]
            if response.status_code >= 400 and content_type.startswith("application/json"):
                assert ("error" if case.path.startswith("/v1/") else "detail") in response.json()

        check()

    assert {path for _, path, _ in seen} == {operation.path for operation in operations}
    assert any(status == 422 for _, _, status in seen)  # the negative cases did reach validation


def _negative() -> schemathesis.GenerationMode:
    return schemathesis.GenerationMode.NEGATIVE
