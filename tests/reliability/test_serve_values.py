"""Out-of-range sampling settings and overflowing inputs: a 4xx naming the field, never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ember.serve import create_app

BAD_SAMPLING = [
    ("temperature", "NaN"), ("temperature", "Infinity"), ("temperature", "-1"),
    ("top_p", "NaN"), ("top_p", "Infinity"), ("top_k", "-5"), ("top_k", str(10**30)),
    ("seed", str(2**70)), ("seed", "-1"),
]


def test_sampling_settings_out_of_range_are_422_naming_the_field(iris_run: Path) -> None:
    with TestClient(create_app(iris_run), raise_server_exceptions=False) as client:
        for field, value in BAD_SAMPLING:
            r = client.post("/v1/generate", content=f'{{"prompt": "a", "{field}": {value}}}',
                            headers={"content-type": "application/json"})
            assert r.status_code == 422, (field, value, r.status_code)
            assert field in r.text, (field, value)


@pytest.mark.parametrize("row", [[3e38, 3e38, 3e38, 3e38], [-3e38, 3e38, -3e38, 3e38]])
def test_finite_but_overflowing_inputs_are_422_not_null_probabilities(iris_run: Path, row: list[float]) -> None:
    with TestClient(create_app(iris_run), raise_server_exceptions=False) as client:
        r = client.post("/v1/predict", json={"inputs": row})
        assert r.status_code == 422 and "inputs" in r.json()["detail"]
