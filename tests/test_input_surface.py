"""Every kind of input a careless or hostile user can give, through the real command line: job files,
grid files, --set values, flags, environment variables, addresses, storage URIs and data folders.
Each ends in exit 2 (bad input) or 1 (a cause at run time), with one line naming what is wrong, no
traceback, no run directory, and nothing else written; no line quotes more than ~80 characters of a
bad value."""

import os

import pytest

from tests.conftest import assert_one_line_error, free_port, invoke

GOOD = "model: {hidden_dim: 8}\ntrain: {iters: 5, eval_every: 5}\ndata: {root: MNIST_ROOT}\n"
# nested aliases: 300 bytes that stand for 9**5 values (printing it whole once took 3.6 MB)
BOMB = ("train:\n  lr: [&a [x, x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a],\n"
        "       &c [*b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c],\n"
        "       [*d, *d, *d, *d, *d, *d, *d, *d, *d]]\n")


def job(text):
    """A job file case: (files, args) where {job} is the file."""
    return {"job.yaml": text}, ["run", "{job}"]


# (id, files, args, env, exit code, fragments of the line)
CASES = [
    # job files: values that pass a type check but cannot train
    ("lr-inf", *job("train: {lr: .inf}\n"), {}, 2, ["job.yaml: train.lr: expected a positive number, got inf"]),
    ("lr-nan", *job("train: {lr: .nan}\n"), {}, 2, ["train.lr: expected a positive number, got nan"]),
    ("lr-negative", *job("train: {lr: -1}\n"), {}, 2, ["train.lr: expected a positive number"]),
    ("target-above-100", *job("train: {target_accuracy: 101}\n"), {}, 2,
     ["train.target_accuracy: expected a number in (0, 100], or null, got 101"]),
    ("target-zero", *job("train: {target_accuracy: 0}\n"), {}, 2, ["train.target_accuracy: expected a number in (0"]),
    ("validation-too-many", *job("data: {validation: 30001}\n"), {}, 2,
     ["data.validation: expected an integer from 0 to 30000, got 30001"]),
    ("validation-leaves-no-batch", *job("data: {validation: 30000}\ntrain: {batch_size: 40000}\n"), {}, 2,
     ["train.batch_size: 40000 is more than the 30000 training images that data.validation (30000) leaves"]),
    ("lr-word", *job("train: {lr: fast}\n"), {}, 2, ["train.lr: expected a positive number, got 'fast'"]),
    ("iters-zero", *job("train: {iters: 0}\n"), {}, 2, ["train.iters: expected an integer from 1 to"]),
    ("iters-float", *job("train: {iters: 1.0e+12}\n"), {}, 2, ["train.iters: expected an integer"]),
    ("iters-huge", *job("train: {iters: 1000000000}\n"), {}, 2, ["train.iters: expected an integer from 1 to"]),
    ("seed-2-64", *job("train: {seed: 18446744073709551616}\n"), {}, 2, ["train.seed: expected an integer from 0"]),
    ("seed-negative", *job("train: {seed: -1}\n"), {}, 2, ["train.seed: expected an integer from 0"]),
    ("batch-zero", *job("train: {batch_size: 0}\n"), {}, 2, ["train.batch_size: expected an integer from 1"]),
    ("batch-huge", *job("train: {batch_size: 100000}\n"), {}, 2, ["train.batch_size: expected an integer from 1"]),
    ("eval-zero", *job("train: {eval_every: 0}\n"), {}, 2, ["train.eval_every: expected an integer from 1"]),
    ("momentum-one", *job("train: {momentum: 1}\n"), {}, 2, ["train.momentum: expected a number in [0, 1)"]),
    ("clip-inf", *job("train: {grad_clip: .inf}\n"), {}, 2, ["train.grad_clip: expected a positive number"]),
    ("optimizer", *job("train: {optimizer: lbfgs}\n"), {}, 2, ["train.optimizer: expected one of sgd, adam"]),
    ("decay", *job("train: {lr_decay: step}\n"), {}, 2, ["train.lr_decay: expected one of none, cosine"]),
    ("hidden-huge", *job("model: {hidden_dim: 100000}\n"), {}, 2, ["model.hidden_dim: expected an integer from 1"]),
    ("layers-huge", *job("model: {layer_dim: 1000}\n"), {}, 2, ["model.layer_dim: expected an integer from 1 to 16"]),
    ("hidden-zero", *job("model: {hidden_dim: 0}\n"), {}, 2, ["model.hidden_dim: expected an integer from 1"]),
    ("cell", *job("model: {cell: transformer}\n"), {}, 2, ["model.cell: expected one of rnn, lstm, gru"]),
    ("kernel", *job("model: {kernel: fast}\n"), {}, 2, ["model.kernel: expected one of auto, torch"]),
    ("cell-nonlinearity", *job("model: {cell: lstm, nonlinearity: relu}\n"), {}, 2,
     ["model.nonlinearity: 'relu' applies to the rnn cell only"]),
    ("name-newline", *job('name: "a\\n"\n'), {}, 2, ["name: expected up to 100 letters"]),
    ("name-long", *job(f"name: {'a' * 300}\n"), {}, 2, ["name: expected up to 100 letters", "..."]),
    ("name-path", *job('name: "../etc"\n'), {}, 2, ["name: expected up to 100 letters"]),
    ("name-empty", *job('name: ""\n'), {}, 2, ["name: expected up to 100 letters"]),
    ("name-number", *job("name: 5\n"), {}, 2, ["name: expected up to 100 letters, digits"]),
    ("workers-zero", *job("scaling: {workers: 0}\n"), {}, 2, ["scaling.workers: expected an integer from 1"]),
    ("workers-huge", *job("scaling: {workers: 100000}\n"), {}, 2, ["scaling.workers: expected an integer from 1"]),
    ("failures", *job("scaling: {max_failures: -1}\n"), {}, 2, ["scaling.max_failures: expected an integer from 0"]),
    ("cpus-zero", *job("scaling: {cpus_per_worker: 0}\n"), {}, 2, ["scaling.cpus_per_worker: expected an integer"]),
    ("gpu-word", *job("scaling: {gpu: maybe}\n"), {}, 2, ["scaling.gpu: expected true or false, got 'maybe'"]),
    ("storage-one-slash", *job("output: {storage: 's3:/bucket'}\n"), {}, 2,
     ["output.storage: looks like a URI with one slash; did you mean s3://bucket?"]),
    ("storage-scheme", *job("output: {storage: 'foo://bucket'}\n"), {}, 2, ["output.storage: unknown scheme 'foo'"]),
    ("dir-uri", *job("output: {dir: 's3://bucket'}\n"), {}, 2, ["output.dir: 's3://bucket' is a URI"]),
    ("root-uri", *job("data: {root: 'gs://x'}\n"), {}, 2, ["data.root: 'gs://x' is a URI"]),
    ("root-empty", *job("data: {root: ''}\n"), {}, 2, ["data.root: expected a folder"]),
    ("unknown-top", *job("trian: {lr: 1}\n"), {}, 2, ["trian: unknown field"]),
    ("unknown-nested", *job("train: {lrr: 1}\n"), {}, 2, ["train.lrr: unknown field"]),
    ("top-list", *job("- a\n- b\n"), {}, 2, ["expected a mapping of sections at the top, got list"]),
    ("section-number", *job("train: 5\n"), {}, 2, ["train: expected a mapping of fields, got 5"]),
    ("malformed", *job("train: {lr: 0.1\n"), {}, 2, ["job.yaml: line ", "malformed YAML"]),
    ("alias-bomb", *job(BOMB), {}, 2, ["train.lr: expected a positive number, got [['x', 'x'", "..."]),
    ("deep-nesting", *job("train: " + "[" * 5000 + "]" * 5000 + "\n"), {}, 2, ["nested too deeply"]),
    ("huge-file", *job("# " + "x" * (1 << 20) + "\n"), {}, 2, ["bytes; a job file holds at most 1048576 bytes"]),
    ("not-utf8", {"job.yaml": b"name: caf\xe9\n"}, ["run", "{job}"], {}, 2,
     ["job.yaml: not UTF-8 text (byte 9 is 0xe9)"]),
    ("directory", {"job.yaml/x": "a"}, ["run", "{job}"], {}, 2, ["job.yaml: is a directory"]),
    ("missing", {}, ["run", "{job}"], {}, 2, ["job.yaml: no such file"]),
    # grid files
    ("grid-null-key", *job("grid:\n  null: [1]\n"), {}, 2, ["grid: None is not a dotted field"]),
    ("grid-number-key", *job("grid:\n  5: [1]\n"), {}, 2, ["grid: 5 is not a dotted field"]),
    ("grid-empty", *job("grid:\n  train.lr: []\n"), {}, 2, ["grid.train.lr: expected a non-empty list"]),
    ("grid-scalar", *job("grid:\n  train.lr: 0.1\n"), {}, 2, ["grid.train.lr: expected a non-empty list"]),
    ("grid-huge", *job("grid:\n" + "".join(f"  train.{k}: [{', '.join(str(i + 1) for i in range(20))}]\n"
                                            for k in ("iters", "eval_every", "batch_size"))), {}, 2,
     ["grid: 8000 trials; a grid runs at most 1000"]),
    ("grid-preset-path", *job("grid:\n  preset: ['../x']\n"), {}, 2,
     ["grid preset='../x': expected the name of a job file beside the grid file"]),
    ("grid-preset-missing", *job("grid:\n  preset: [nowhere]\n"), {}, 2, ["no job file"]),
    ("grid-output", *job("grid:\n  output.dir: [a]\n"), {}, 2, ["grid.output.dir: cannot be swept"]),
    ("grid-value", *job("grid:\n  train.lr: [fast]\n"), {}, 2, ["grid train.lr='fast': train.lr: expected"]),
    ("search-unknown-distribution", *job("search:\n  space:\n    train.lr: {normal: [0, 1]}\n"), {}, 2,
     ["search.space.train.lr: unknown distribution 'normal' (known: choice, uniform, loguniform, randint)"]),
    ("search-loguniform-zero", *job("search:\n  space:\n    train.lr: {loguniform: [0, 1]}\n"), {}, 2,
     ["search.space.train.lr: loguniform: expected a positive low bound, got 0"]),
    ("search-randint-floats", *job("search:\n  space:\n    model.hidden_dim: {randint: [8.5, 16]}\n"), {}, 2,
     ["search.space.model.hidden_dim: randint: expected [low, high], two integers"]),
    ("search-uniform-int-field", *job("search:\n  space:\n    model.hidden_dim: {uniform: [8, 16]}\n"), {}, 2,
     ["search.space.model.hidden_dim (uniform reaches 8.0): model.hidden_dim: expected an integer from 1 to 4096"]),
    ("search-out-of-range", *job("search:\n  space:\n    train.lr: {uniform: [-1, 1]}\n"), {}, 2,
     ["search.space.train.lr (uniform reaches -1.0): train.lr: expected a positive number, got -1.0"]),
    ("search-choice-bad-value", *job("search:\n  space:\n    model.cell: {choice: [rnn, transformer]}\n"), {}, 2,
     ["search.space.model.cell (choice reaches 'transformer'): model.cell: expected one of rnn, lstm, gru"]),
    ("search-combination", *job("search:\n  space:\n    model.cell: {choice: [rnn, lstm]}\n"
                                "    model.nonlinearity: {choice: [tanh, relu]}\n"), {}, 2,
     ["search.space at model.cell='lstm', model.nonlinearity='relu': model.nonlinearity: 'relu' applies to the rnn"]),
    ("search-scaling", *job("search:\n  space:\n    scaling.workers: {choice: [1, 2]}\n"), {}, 2,
     ["search.space.scaling.workers: cannot be sampled"]),
    ("search-empty-space", *job("search: {num_samples: 3}\n"), {}, 2,
     ["search.space: expected a mapping of dotted fields to distributions, got None"]),
    ("search-samples", *job("search: {num_samples: 0, space: {train.lr: {choice: [0.1]}}}\n"), {}, 2,
     ["search.num_samples: expected an integer from 1 to 1000, got 0"]),
    ("search-algorithm", *job("search: {algorithm: hyperopt, space: {train.lr: {choice: [0.1]}}}\n"), {}, 2,
     ["search.algorithm: expected one of random, optuna, got 'hyperopt'"]),
    ("search-and-grid", *job("grid: {train.lr: [0.1]}\nsearch: {space: {train.lr: {choice: [0.1]}}}\n"), {}, 2,
     ["grid and search: a job file has one or the other"]),
    ("repeat-on-a-job", *job("repeat: 3\n"), {}, 2,
     ["repeat: applies to a grid or a search (a `grid:` or `search:` section)"]),
    ("repeat-on-a-seed-grid", *job("grid: {train.seed: [0, 1]}\nrepeat: 3\n"), {}, 2,
     ["repeat: the grid sweeps train.seed already; use one or the other"]),
    ("repeat-grid-too-big", *job("grid: {model.hidden_dim: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}\nrepeat: 100\n"),
     {}, 2, ["grid: 1100 trials (with repeat); a grid runs at most 1000"]),
    ("repeat-grid-bool", *job("grid: {train.lr: [0.1]}\nrepeat: true\n"), {}, 2,
     ["repeat: expected an integer from 1 to 100, got True"]),
    ("repeat-zero", *job("search: {space: {train.lr: {choice: [0.1]}}}\nrepeat: 0\n"), {}, 2,
     ["repeat: expected an integer from 1 to 100, got 0"]),
    ("repeat-with-asha", *job("search: {space: {train.lr: {choice: [0.1]}}}\nrepeat: 2\n"
                              "tune: {scheduler: asha}\n"), {}, 2, ["repeat: asha compares samples while they train"]),
    ("search-val-metric", *job("search: {space: {train.lr: {choice: [0.1]}}}\ntune: {metric: val_accuracy}\n"),
     {}, 2, ["tune.metric: val_accuracy needs data.validation"]),
    ("tune-val-metric", *job("grid:\n  train.lr: [0.1]\ntune: {scheduler: asha, metric: val_accuracy}\n"), {}, 2,
     ["tune.metric: val_accuracy needs data.validation (held-out training images) in every trial"]),
    ("tune-scheduler", *job("grid:\n  train.lr: [0.1]\ntune: {scheduler: hyperband}\n"), {}, 2,
     ["tune.scheduler: expected one of none, asha"]),
    ("tune-concurrency", *job("grid:\n  train.lr: [0.1]\ntune: {max_concurrent: 0}\n"), {}, 2,
     ["tune.max_concurrent: expected an integer from 1"]),
    # --set values
    ("set-inf", {"job.yaml": GOOD}, ["run", "{job}", "--set", "train.lr=.inf"], {}, 2,
     ["(with --set): train.lr: expected a positive number, got inf"]),
    ("set-seed", {"job.yaml": GOOD}, ["run", "{job}", "--set", "train.seed=99999999999999999999"], {}, 2,
     ["train.seed: expected an integer from 0"]),
    ("set-no-equals", {"job.yaml": GOOD}, ["run", "{job}", "--set", "bogus"], {}, 2, ["--set bogus: expected dotted"]),
    ("set-not-section", {"job.yaml": GOOD}, ["run", "{job}", "--set", "name.x=1"], {}, 2, ["name is not a section"]),
    ("set-list", {"job.yaml": GOOD}, ["run", "{job}", "--set", "train.lr=[1, 2]"], {}, 2,
     ["train.lr: expected a positive number, got [1, 2]"]),
    ("set-huge", {"job.yaml": GOOD}, ["run", "{job}", "--set", "model.hidden_dim=1e9"], {}, 2,
     ["model.hidden_dim: expected an integer from 1 to 4096, got 1000000000.0"]),
    ("set-long-value", {"job.yaml": GOOD}, ["run", "{job}", "--set", "train.optimizer=" + "z" * 5000], {}, 2,
     ["train.optimizer: expected one of sgd, adam, got 'zzz", "..."]),
    # flags
    ("iters-flag-zero", {"job.yaml": GOOD}, ["run", "{job}", "--iters", "0"], {}, 2, ["--iters"]),
    ("iters-flag-word", {"job.yaml": GOOD}, ["run", "{job}", "--iters", "many"], {}, 2,
     ["Invalid value for '--iters'"]),
    ("device", {"job.yaml": GOOD}, ["run", "{job}", "--device", "tpu"], {}, 2, ["--device"]),
    ("cuda-absent", {"job.yaml": GOOD}, ["run", "{job}", "--device", "cuda"], {}, 2, ["no CUDA device"]),
    ("workers-flag", {"job.yaml": GOOD}, ["submit", "{job}", "--workers", "0"], {}, 2, ["--workers"]),
    ("concurrency-flag", {"job.yaml": GOOD}, ["submit", "{job}", "--max-concurrent", "0"], {}, 2, ["--max-concurrent"]),
    ("unknown-flag", {"job.yaml": GOOD}, ["run", "{job}", "--bogus"], {}, 2, ["No such option: --bogus"]),
    ("out-empty", {"job.yaml": GOOD}, ["run", "{job}", "--out", ""], {}, 2, ["output.dir: expected a folder"]),
    ("out-uri", {"job.yaml": GOOD}, ["run", "{job}", "--out", "s3://bucket"], {}, 2,
     ["output.dir: 's3://bucket' is a URI"]),
    ("format", {}, ["results", ".", "--format", "xml"], {}, 2, ["--format: expected one of"]),
    ("interval", {}, ["watch", ".", "--interval", "0"], {}, 2, ["--interval"]),
    # environment variables
    ("sources-env", {"job.yaml": GOOD}, ["run", "{job}"], {"RNNJOB_MNIST_SOURCES": "ftp"}, 2,
     ["RNNJOB_MNIST_SOURCES: unknown MNIST source ftp"]),
    ("sources-env-empty-list", {"job.yaml": GOOD}, ["run", "{job}"], {"RNNJOB_MNIST_SOURCES": ",,"}, 2,
     ["RNNJOB_MNIST_SOURCES: unknown MNIST source"]),
    ("fault-env", {"job.yaml": GOOD}, ["submit", "{job}"], {"RNNJOB_FAULT": "rank one"}, 2,
     ["RNNJOB_FAULT=rank one: expected RANK:ITERATION"]),
    ("source-flag", {}, ["data", "fetch", "--source", "ftp"], {}, 2, ["unknown MNIST source ftp"]),
    # addresses
    ("address-port", {"job.yaml": GOOD}, ["submit", "{job}", "--address", "http://h:abc"], {}, 2,
     ["--address http://h:abc: the port is not a number"]),
    ("address-list-port", {}, ["list", "--address", "http://h:99999"], {}, 2, ["the port is not a number"]),
    ("address-gcs-port", {"job.yaml": GOOD}, ["submit", "{job}", "--address", "h:abc"], {}, 2,
     ["--address h:abc: expected HOST:PORT"]),
    ("address-jobs-scheme", {}, ["status", "raysubmit_x", "--address", "ftp://x"], {}, 2,
     ["--address ftp://x: these commands talk to a cluster's Jobs API"]),
    ("address-closed", {}, ["list", "--address", "http://127.0.0.1:{port}"], {}, 1,
     ["cannot reach a Ray dashboard at http://127.0.0.1:"]),
    # storage URIs and folders given to commands
    ("results-scheme", {}, ["results", "foo://x"], {}, 2, ["foo://x: unknown scheme 'foo'"]),
    ("results-one-slash", {}, ["results", "s3:/x"], {}, 2, ["s3:/x: looks like a URI with one slash"]),
    ("plot-scheme", {}, ["plot", "foo://x"], {}, 2, ["unknown scheme 'foo'"]),
    ("eval-scheme", {}, ["eval", "foo://x/model.pt"], {}, 2, ["unknown scheme 'foo'"]),
    ("watch-one-slash", {}, ["watch", "gs:/x"], {}, 2, ["looks like a URI with one slash"]),
    ("results-missing", {}, ["results", "nowhere/runs"], {}, 2, ["nowhere/runs: no such directory"]),
    ("eval-missing", {}, ["eval", "nowhere/run"], {}, 2, ["nowhere/run: no such run directory or model file"]),
    # data folders
    ("root-is-file", {"job.yaml": "data: {root: afile}\n", "afile": "x"}, ["run", "{job}"], {}, 2,
     ["data.root: ", "afile is a file, not a folder"]),
    ("root-under-file", {"job.yaml": "data: {root: afile/data}\n", "afile": "x"}, ["run", "{job}"], {}, 2,
     ["afile is a file, not a folder"]),
    ("fetch-root-file", {"afile": "x"}, ["data", "fetch", "--root", "afile"], {}, 2, ["afile is a file, not a folder"]),
]


def snapshot(folder) -> dict:
    found = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(base, name)
            found[os.path.relpath(path, folder)] = os.path.getsize(path) if name in files else "dir"
    return found


@pytest.mark.parametrize("files,args,env,code,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, mnist_root, files, args, env, code,
                                                  fragments):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "")  # restored after: `submit --address` sets it, as Ray's CLI does
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.replace("MNIST_ROOT", str(mnist_root)).encode()
        (tmp_path / name).write_bytes(content)
    before = snapshot(tmp_path)
    port = free_port()
    result = invoke(*[a.format(job=tmp_path / "job.yaml", port=port) for a in args], **env)
    line = assert_one_line_error(result, code, *fragments)
    assert len(line) < 300, line  # the value is quoted, not dumped
    assert snapshot(tmp_path) == before, "something was written"
    assert not (tmp_path / "runs").exists()


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60
