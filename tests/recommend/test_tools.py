"""End to end on tiny synthetic interactions: train, summary baseline, report, ember recommend, server."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from ember.recommend.topk import recommend
from ember.serve import create_app
from tests.conftest import run_cli


def test_summaries_carry_metrics_and_baseline(rec_runs: dict[str, Path]) -> None:
    rating = json.loads((rec_runs["rating"] / "summary.json").read_text())
    assert rating["task"] == "regression" and rating["baseline"]["name"] == "item_mean"
    assert {"rmse", "mae"} <= set(rating["test"])
    ranking = json.loads((rec_runs["ranking"] / "summary.json").read_text())
    assert ranking["task"] == "ranking" and ranking["baseline"]["name"] == "popularity"
    assert {"recall_at_10", "ndcg_at_10", "hit_rate_at_10"} <= set(ranking["test"])
    assert 0 <= ranking["test"]["ndcg_at_10"] <= 1
    report = (rec_runs["ranking"] / "report.html").read_text()
    assert "Against the popularity baseline" in report and "ndcg_at_10" in report


def test_recommend_excludes_seen_items_and_shows_titles(rec_runs: dict[str, Path], interactions: Path) -> None:
    rows = recommend(rec_runs["ranking"], "u0", k=5)
    seen = {line.split(",")[1] for line in interactions.read_text().splitlines()[1:] if line.startswith("u0,")}
    assert len(rows) == 5 and [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert not {r["item"] for r in rows} & seen
    assert all(r["title"] == f"Film {r['item'][1:]}" for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    everything = recommend(rec_runs["rating"], "u0", k=100, exclude_seen=False)
    assert len(everything) == 30 and "predicted_rating" in everything[0]


def test_recommend_cli(rec_runs: dict[str, Path]) -> None:
    proc = run_cli("recommend", rec_runs["rating"], "--user", "u1", "-k", "3", check=True)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].strip().startswith("1. Film ")
    bad = run_cli("recommend", rec_runs["rating"], "--user", "nobody")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "unknown user 'nobody'" in bad.stderr


def test_server_recommend_and_predict(rec_runs: dict[str, Path]) -> None:
    with TestClient(create_app(rec_runs["rating"])) as client:
        r = client.post("/v1/recommend", json={"user": "u2", "k": 4}).json()
        assert r["user"] == "u2" and len(r["items"]) == 4
        assert r["items"] == recommend(rec_runs["rating"], "u2", k=4)
        assert client.post("/v1/recommend", json={"user": "zz"}).status_code == 400
        pred = client.post("/v1/predict", json={"inputs": {"user": "u2", "item": "m3"}}).json()["predictions"]
        assert len(pred) == 1 and "rating" in pred[0]["prediction"]
        assert client.post("/v1/predict", json={"inputs": {"user": "u2", "item": "nope"}}).status_code == 400
    with TestClient(create_app(rec_runs["ranking"])) as client:
        top = client.post("/v1/predict", json={"inputs": {"user": "u3"}}).json()["predictions"][0]
        assert len(top["items"]) == 10
