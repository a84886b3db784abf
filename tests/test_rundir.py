"""Run directories: never reused, files written whole, and one summary writer for every outcome."""

import json
import time

import pytest
import torch

from rnn_mnist import rundir
from rnn_mnist.spec import JobSpec, ModelSpec


def test_a_taken_name_gets_the_next_free_suffix(tmp_path):
    assert [rundir.create(tmp_path, "job") for _ in range(3)] == [str(tmp_path / n) for n in ("job", "job-2", "job-3")]


def test_metrics_are_written_whole_and_read_back(tmp_path):
    history = [{"iteration": 10, "loss": 2.0, "accuracy": 20.0, "elapsed": 1.0},
               {"iteration": 20, "loss": 1.5, "accuracy": 40.0, "elapsed": 2.0}]
    rundir.write_metrics(tmp_path, history)
    assert rundir.read_metrics(tmp_path) == history and rundir.last_iteration(tmp_path) == 20
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left


def saved_state(iteration=20):
    spec = JobSpec(model=ModelSpec(hidden_dim=8))
    return {"spec": spec.to_dict(), "model": {"w": torch.zeros(2)}, "optimizer": {}, "rng": torch.get_rng_state(),
            "setup": {"device": "cpu", "workers": 2, "threads": 1, "params": 522, "nodes": ["a", "a"],
                      "gradient_sync": "gloo"},
            "iteration": iteration, "history": [{"iteration": 10, "loss": 2.0, "accuracy": 20.0, "elapsed": 1.0},
                                                {"iteration": 20, "loss": 1.5, "accuracy": 40.0, "elapsed": 2.0}],
            "train_seconds": 1.25, "elapsed": 2.0, "restarts": 1}


def test_the_summary_comes_from_the_last_checkpoint(tmp_path):
    rundir.save_model(tmp_path, saved_state())
    summary = rundir.finish(tmp_path, JobSpec(name="j"), "completed", time.time() - 5)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (summary["status"], summary["iterations"], summary["final_accuracy"], summary["best_accuracy"]) == \
        ("completed", 20, 40.0, 40.0)
    assert (summary["workers"], summary["nodes"], summary["gradient_sync"], summary["restarts"]) == (2, ["a", "a"],
                                                                                                      "gloo", 1)
    assert summary["train_seconds"] == 1.25 and 5 <= summary["wall_seconds"] < 60 and "error" not in summary


def test_a_run_stopped_before_its_first_checkpoint_still_gets_a_summary(tmp_path):
    summary = rundir.finish(tmp_path, JobSpec(name="j"), "failed", time.time(), "boom", device="cuda")
    assert (summary["status"], summary["error"], summary["iterations"], summary["final_accuracy"]) == \
        ("failed", "boom", 0, None)
    assert summary["device"] == "cuda" and summary["params"] == 100 * 28 + 100 * 100 + 200 + 1010


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not an rnnjob model file"):
        rundir.load_model(tmp_path)
    torch.save({"something": "else"}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="not an rnnjob model file"):
        rundir.load_model(tmp_path)


def test_models_from_an_older_rnnjob_still_load(tmp_path):
    rundir.save_model(tmp_path, saved_state())
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save({**state, "format": "rnnjob-model/1"}, tmp_path / "model.pt")
    assert rundir.load_model(tmp_path)["iteration"] == 20
