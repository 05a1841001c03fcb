"""schemathesis against the server's OpenAPI spec: no 5xx, responses conform to the schema."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

import ember  # noqa: E402
from ember.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("schema")
    run = ember.train("iris-mlp", ["train.epochs=2", f"log.runs_dir={root}", "log.report=false"], verbose=False)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(run.path))


def test_api_conforms(api_schema) -> None:  # noqa: ANN001
    """Every operation, 30 generated requests each (schemathesis' pytest plugin is not used: it
    does not load under this pytest; the strategies and checks are the same)."""
    from hypothesis import given
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/generate", "/v1/model", "/health"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:  # noqa: ANN001
            # The spec types `inputs` loosely (its shape depends on the run), so a request the
            # schema allows may still be refused with a 4xx naming what the model takes: that
            # acceptance check is the one left out; no 5xx and schema-conformant responses stay.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
