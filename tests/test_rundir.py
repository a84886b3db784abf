"""Run directories: never reused, files written whole, and one summary writer for every outcome."""

import json
import time

import pytest
import torch

from rnn_mnist import rundir
from rnn_mnist import spec as specs
from rnn_mnist.spec import JobSpec, ModelSpec


def test_a_taken_name_gets_the_next_free_suffix(tmp_path):
    assert [rundir.create(tmp_path, "job") for _ in range(3)] == [str(tmp_path / n) for n in ("job", "job-2", "job-3")]


def test_metrics_are_written_whole_and_read_back(tmp_path):
    history = [{"iteration": 10, "loss": 2.0, "accuracy": 20.0, "elapsed": 1.0},
               {"iteration": 20, "loss": 1.5, "accuracy": 40.0, "elapsed": 2.0}]
    rundir.write_metrics(tmp_path, history)
    assert rundir.read_metrics(tmp_path) == history
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
    summary = rundir.finish(tmp_path, JobSpec(name="j"), rundir.Status.COMPLETED, time.time() - 5)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == summary.to_dict() and rundir.read_summary(tmp_path) == summary
    assert (summary.status, summary.iterations, summary.final_accuracy, summary.best_accuracy) == \
        ("completed", 20, 40.0, 40.0)
    assert (summary.workers, summary.nodes, summary.gradient_sync, summary.restarts) == (2, ["a", "a"], "gloo", 1)
    assert summary.train_seconds == 1.25 and 5 <= summary.wall_seconds < 60
    # the file holds the documented keys: none of a section the run did not use (validation, target, error)
    assert list(written) == ["name", "status", "iterations", "final_accuracy", "final_loss", "best_accuracy",
                             "wall_seconds", "train_seconds", "device", "workers", "threads", "params", "restarts",
                             "resumes", "nodes", "gradient_sync"]


def test_a_run_stopped_before_its_first_checkpoint_still_gets_a_summary(tmp_path):
    summary = rundir.finish(tmp_path, JobSpec(name="j"), rundir.Status.FAILED, time.time(), "boom", device="cuda")
    assert (summary.status, summary.error, summary.iterations, summary.final_accuracy) == \
        ("failed", "boom", 0, None)
    assert summary.device == "cuda" and summary.params == 100 * 28 + 100 * 100 + 200 + 1010


def test_the_summarys_optional_sections_are_written_only_where_the_run_used_them(tmp_path):
    spec = specs.from_dict({"name": "j", "data": {"validation": 100}, "train": {"target_accuracy": 99.0}})
    rundir.save_model(tmp_path, saved_state())
    summary = rundir.finish(tmp_path, spec, rundir.Status.COMPLETED, time.time())
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["final_val_accuracy"] is None and written["best_val_accuracy"] is None  # none was measured
    assert written["target_accuracy"] == 99.0 and written["reached_target"] is None  # never reached
    assert "error" not in written and "lr_schedule" not in written
    assert rundir.read_summary(tmp_path) == summary


@pytest.mark.parametrize("text, fragment", [
    ("", "not JSON"),
    ("[1, 2]", "expected a mapping of fields, got list"),
    ('{"name": "j"}', "status: missing"),
    ("{}", "name: missing"),
])
def test_a_damaged_summary_is_one_error_naming_the_file_and_field(tmp_path, text, fragment):
    (tmp_path / "summary.json").write_text(text)
    with pytest.raises(rundir.Unreadable, match=fragment) as raised:
        rundir.read_summary(tmp_path)
    assert str(raised.value).startswith(str(tmp_path / "summary.json") + ": ")


def test_a_summary_with_a_field_of_the_wrong_kind_or_an_unknown_status_is_refused(tmp_path):
    rundir.save_model(tmp_path, saved_state())
    good = rundir.finish(tmp_path, JobSpec(name="j"), rundir.Status.COMPLETED, time.time()).to_dict()
    for change, fragment in (({"status": "exploded"}, "status: expected one of completed, failed, interrupted, "
                                                      "stopped, got 'exploded'"),
                             ({"iterations": "20"}, "iterations: expected int, got '20'"),
                             ({"params": True}, "params: expected int, got True"),
                             ({"colour": "red"}, "colour: not a field rnnjob writes")):
        (tmp_path / "summary.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(rundir.Unreadable, match=fragment):
            rundir.read_summary(tmp_path)


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    for junk in (b"", b"junk"):
        (tmp_path / "model.pt").write_bytes(junk)
        with pytest.raises(rundir.Unreadable, match="not an rnnjob model file"):
            rundir.load_model(tmp_path)
    torch.save({"something": "else"}, tmp_path / "model.pt")
    with pytest.raises(rundir.Unreadable, match="not an rnnjob model file"):
        rundir.load_model(tmp_path)
    rundir.save_model(tmp_path, {**saved_state(), "history": "none"})
    with pytest.raises(rundir.Unreadable, match="without a valid history"):
        rundir.load_model(tmp_path)


def test_damaged_metrics_name_the_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 10, "loss": 2.0, "accuracy": 20.0, "elapsed": 1.0}\n{"it')
    with pytest.raises(rundir.Unreadable, match=r"metrics.jsonl: line 2: not JSON"):
        rundir.read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"iteration": "10", "loss": 2.0, "accuracy": 20.0, "elapsed": 1.0}\n')
    with pytest.raises(rundir.Unreadable, match=r"metrics.jsonl: line 1: expected an evaluation"):
        rundir.read_metrics(tmp_path)


def test_a_jobs_api_driver_records_where_its_run_went_by_the_jobs_id(tmp_path, monkeypatch):
    rundir.write_submission(tmp_path, tmp_path / "model_c")  # not a Jobs API job: nothing is written
    assert list(tmp_path.iterdir()) == [] and rundir.read_submission(tmp_path, "raysubmit_x") is None
    monkeypatch.setenv(rundir.SUBMISSION_ENV, "raysubmit_x")
    rundir.write_submission(tmp_path, tmp_path / "model_c-2")
    assert rundir.read_submission(tmp_path, "raysubmit_x") == str(tmp_path / "model_c-2")
    (tmp_path / ".submissions" / "raysubmit_y.json").write_text("{damaged")
    assert rundir.read_submission(tmp_path, "raysubmit_y") is None  # watch then goes by the job's status alone
