"""Studies in one process: pruning on a SQLite storage, the report, diverging and bad trials."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

import ember
from ember.cli_tables import print_studies
from ember.config import load
from ember.errors import ConfigError
from ember.runs import Run, list_studies
from tests.tune.helpers import tiny


@pytest.fixture(scope="module")
def pruned_study(tmp_path_factory: pytest.TempPathFactory):
    """4 trials on SQLite, queued so that the median pruner must stop the two hopeless ones.

    Trials 0 and 1 (a good lr, the same run twice: one thread, same seed) are the 2 startup
    trials, never pruned, and set the median; trials 2 and 3 (lr 1e-7) fall below it at
    epoch 1 and are pruned.
    """
    root = tmp_path_factory.mktemp("tune")
    url = f"sqlite:///{root / 'study.db'}"
    pre = optuna.create_study(storage=url, study_name="prune", direction="maximize")
    for lr in (0.01, 0.01, 1e-7, 1e-7):
        pre.enqueue_trial({"optim.lr": lr})
    result = ember.tune("digits-mlp", {"optim.lr": {"choice": [0.01, 1e-7]}}, tiny(root / "runs", epochs=3),
                        trials=4, storage=url, study="prune", pruner="median", quiet=True)
    return root, url, result


def test_pruning_stops_trials_cleanly(pruned_study) -> None:
    root, url, result = pruned_study
    trials = optuna.load_study(study_name="prune", storage=url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert result.counts == {"complete": 2, "pruned": 2}
    record = json.loads((result.path / "study.json").read_text())
    assert [t["epochs"] for t in record["trials"]] == [3, 3, 1, 1]
    assert record["epochs_run"] == 8
    pruned = Run(result.path / "trial-0002")
    # A pruned trial is a whole run: it ended cleanly, wrote weights and a summary, and says so.
    assert pruned.weights.is_file() and pruned.read_summary()["stopped_early"] is True
    assert json.loads(pruned.trial.read_text())["state"] == "pruned"
    assert len([r for r in pruned.read_metrics() if r.get("split") == "val"]) == 1
    assert trials[2].intermediate_values.keys() == {1}


def test_report_and_best_yaml(pruned_study) -> None:
    root, _, result = pruned_study
    assert result.best_value == pytest.approx(json.loads((result.path / "study.json").read_text())
                                              ["best"]["value"])
    assert result.best_params == {"optim.lr": 0.01}
    cfg = load(str(result.best_config))  # a ready recipe
    assert cfg.optim.lr == 0.01 and cfg.recipe == "digits-mlp" and cfg.train.epochs == 3
    page = (result.path / "study.html").read_text()
    assert page.count("data:image/png;base64,") >= 3  # history, intermediate values, slice, ...
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "trial-0002" in page


def test_runs_groups_a_study(pruned_study, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, result = pruned_study
    studies = list_studies(root / "runs")
    assert [s.path for s in studies] == [result.path]
    assert [r.path.name for r in studies[0].trials()] == [f"trial-000{i}" for i in range(4)]
    print_studies(studies)
    out = capsys.readouterr().out
    assert "study prune" in out and "pruned" in out and "2 complete, 2 pruned" in out


def test_same_command_resumes_and_a_changed_space_is_refused(pruned_study) -> None:
    root, url, result = pruned_study
    again = ember.tune("digits-mlp", {"optim.lr": {"choice": [0.01, 1e-7]}}, tiny(root / "runs", epochs=3),
                       trials=4, storage=url, study="prune", quiet=True)
    assert again.counts == result.counts  # nothing left to run
    with pytest.raises(ConfigError, match="another space"):
        ember.tune("digits-mlp", {"optim.lr": {"choice": [0.01, 0.02]}}, tiny(root / "runs", epochs=3),
                   trials=4, storage=url, study="prune", quiet=True)


def test_diverging_trial_is_failed_and_the_study_goes_on(tmp_path: Path) -> None:
    overrides = [*tiny(tmp_path / "runs", epochs=1), "optim.name=sgd", "model.batch_norm=false"]
    result = ember.tune("digits-mlp", {"optim.lr": {"choice": [1.0e6, 0.05]}}, overrides, trials=2,
                        sampler="grid", pruner="none", quiet=True)
    assert result.counts == {"complete": 1, "fail": 1}
    record = json.loads((result.path / "study.json").read_text())
    failed = next(t for t in record["trials"] if t["state"] == "fail")
    assert failed["params"] == {"optim.lr": 1.0e6} and "non-finite loss" in failed["error"]
    assert result.best_params == {"optim.lr": 0.05}


def test_user_error_in_a_trial_stops_the_study(tmp_path: Path) -> None:
    # Each value passes alone; adam with nesterov is refused only when a trial combines them.
    space = {"optim.name": {"choice": ["sgd", "adam"]}, "optim.nesterov": {"choice": [False, True]}}
    with pytest.raises(ConfigError, match="nesterov needs name: sgd"):
        ember.tune("digits-mlp", space, [*tiny(tmp_path / "runs", epochs=1), "optim.name=sgd"], trials=4,
                   sampler="grid", quiet=True)
    record = json.loads((tmp_path / "runs" / "digits-mlp-tune" / "study.json").read_text())
    assert record["trials"][-1]["state"] == "fail"
    assert record["counts"].get("complete", 0) == len(record["trials"]) - 1  # stopped at once


def test_bad_options_exit_before_any_trial(tmp_path: Path) -> None:
    space = {"optim.lr": {"loguniform": [1e-4, 1e-1]}}
    runs = tiny(tmp_path / "runs")
    for kwargs, message in [({"metric": "val.auc"}, "--metric: got 'val.auc'; valid: val.accuracy"),
                            ({"metric": "test.accuracy"}, "a study watches a validation metric"),
                            ({"trials": 0}, "--trials"), ({"pruner": "asha"}, "--pruner"),
                            ({"timeout": "soon"}, "--timeout"), ({"sampler": "grid"}, "grid sampler"),
                            ({"storage": "nosuchdb://x"}, "--storage: cannot open")]:
        with pytest.raises(ConfigError, match=None) as info:
            ember.tune("digits-mlp", space, runs, **kwargs)
        assert message in str(info.value)
    assert not list((tmp_path / "runs").glob("*/trial-*"))


def test_every_sampler_and_pruner_builds() -> None:
    from ember.tune.runner import PRUNERS, SAMPLERS, make_pruner, make_sampler
    from ember.tune.space import parse_space

    space = parse_space({"optim.lr": {"uniform": [0.001, 0.01], "step": 0.001},
                         "model.hidden": {"choice": [[16], [32]]}})
    for name in SAMPLERS:
        study = optuna.create_study(sampler=make_sampler(name, space, seed=0), direction="maximize")
        trial = study.ask()
        values = space.suggest(trial)
        study.tell(trial, 1.0)
        assert values["model.hidden"] in ([16], [32])
    for name in PRUNERS:
        assert isinstance(make_pruner(name, epochs=5, trials=8), optuna.pruners.BasePruner)


def test_timeout_starts_no_trial_after_it(tmp_path: Path) -> None:
    result = ember.tune("digits-mlp", {"optim.lr": {"loguniform": [1e-3, 1e-2]}}, tiny(tmp_path / "runs", epochs=1),
                        trials=20, timeout="0.001s", quiet=True)
    assert sum(result.counts.values()) <= 1


def test_a_study_runs_in_one_ember_tune_at_a_time(tmp_path: Path) -> None:
    from ember.errors import RunError
    from ember.runs import Study
    from ember.tune.storage import file_lock

    folder = Study(tmp_path / "runs" / "digits-mlp-tune")
    with file_lock(folder.lock("driver")), pytest.raises(RunError, match="another ember tune is running it"):
        ember.tune("digits-mlp", {"optim.lr": {"loguniform": [1e-3, 1e-2]}}, tiny(tmp_path / "runs"), trials=1)
    assert not folder.settings.exists()


def test_median_pruner_waits_for_two_trials_at_least() -> None:
    from ember.tune.runner import make_pruner

    assert [make_pruner("median", epochs=5, trials=n)._n_startup_trials for n in (1, 4, 8, 12, 40)] == [2, 2, 2, 3, 5]
