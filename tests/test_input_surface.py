"""Every kind of input a careless or hostile user can give, through the real command line: job files,
grid files, --set values, flags, environment variables, addresses, storage URIs and data folders.
Each ends in exit 2 (bad input) or 1 (a cause at run time), with one line naming what is wrong, no
traceback, no run directory, and nothing else written; no line quotes more than ~80 characters of a
bad value."""

import os

import pytest

from tests.helpers import assert_one_line_error, free_port, invoke

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
    ("duplicate-key", *job("train: {lr: 0.1}\ntrain: {iters: 5}\n"), {}, 2,
     ["job.yaml: line 2: 'train' is given twice (the second would silently win)"]),
    ("duplicate-field", *job("train: {lr: 0.1, lr: 0.2}\n"), {}, 2, ["job.yaml: line 1: 'lr' is given twice"]),
    ("validate-duplicate", {"job.yaml": "model: {cell: lstm}\nmodel: {cell: gru}\n"}, ["validate", "{job}"], {}, 2,
     ["job.yaml: line 2: 'model' is given twice"]),
    ("validate-missing", {}, ["validate", "{job}"], {}, 2, ["job.yaml: no such file"]),
    ("out-below-a-file", {"job.yaml": GOOD + "output: {dir: afile/runs}\n", "afile": "x"}, ["run", "{job}"], {}, 2,
     ["output: ", "afile is a file, not a folder; runs cannot go below it"]),
    ("submit-out-below-a-file", {"job.yaml": GOOD + "output: {dir: afile/runs}\n", "afile": "x"},
     ["submit", "{job}"], {}, 2, ["afile is a file, not a folder"]),
    ("grid-out-below-a-file", {"job.yaml": GOOD + "output: {dir: afile}\ngrid: {train.lr: [0.1]}\n", "afile": "x"},
     ["submit", "{job}"], {}, 2, ["afile is a file, not a folder"]),
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
    ("address-ipv6-bare", {}, ["list", "--address", "http://::1:8265"], {}, 2,
     ["--address http://::1:8265: an IPv6 address goes in brackets: http://[::1]:8265"]),
    ("address-ipv6-gcs", {"job.yaml": GOOD}, ["submit", "{job}", "--address", "::1:6379"], {}, 2,
     ["--address ::1:6379: an IPv6 address goes in brackets: [::1]:6379"]),
    ("address-ipv6-jobs-submit", {"job.yaml": GOOD}, ["submit", "{job}", "--address", "http://fe80::1:8265"], {}, 2,
     ["an IPv6 address goes in brackets"]),
    ("logs-scheme", {}, ["logs", "raysubmit_x", "--address", "ftp://x"], {}, 2,
     ["--address ftp://x: these commands talk to a cluster's Jobs API"]),
    ("stop-port", {}, ["stop", "raysubmit_x", "--address", "http://h:0"], {}, 2, ["the port is not a number"]),
    ("status-closed", {}, ["status", "raysubmit_x", "--address", "http://127.0.0.1:{port}"], {}, 1,
     ["cannot reach a Ray dashboard"]),
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
    ("data-file-is-a-folder", {"job.yaml": "data: {root: d}\n", "d/MNIST/raw/train-images-idx3-ubyte/x": "a"},
     ["run", "{job}"], {}, 2, ["train-images-idx3-ubyte: is a folder or a special file, not MNIST's"]),
    ("fetch-file-is-a-folder", {"d/MNIST/raw/t10k-labels-idx1-ubyte/x": "a"}, ["data", "fetch", "--root", "d"], {}, 2,
     ["t10k-labels-idx1-ubyte: is a folder or a special file"]),
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


# Run directories, grid and search records, model files, metrics and plots as a crash, a full disk or a hand
# edit leaves them: every command that reads one. (id, what is laid out, its damage: path -> bytes, or DELETE,
# or FOLDER, args, exit code, fragments of the line); {run}, {grid}, {search}: their folders below the test's.
DELETE, FOLDER = object(), object()
FOREIGN_MODEL = "foreign"  # a torch file that is not rnnjob's
WRONG_WEIGHTS = "wrong-weights"  # an rnnjob model file whose weights do not fit its own spec
RUN_CASES = [
    ("resume-empty-model", "run", {"model.pt": b""}, ["resume", "{run}"], 2,
     ["model.pt: not an rnnjob model file (empty)"]),
    ("eval-empty-model", "run", {"model.pt": b""}, ["eval", "{run}"], 2, ["model.pt: not an rnnjob model file"]),
    ("resume-foreign-model", "run", {"model.pt": FOREIGN_MODEL}, ["resume", "{run}"], 2,
     ["model.pt: not an rnnjob model file"]),
    ("eval-foreign-model", "run", {"model.pt": FOREIGN_MODEL}, ["eval", "{run}/model.pt"], 2,
     ["model.pt: not an rnnjob model file"]),
    ("eval-text-as-model", "run", {"model.pt": b"weights: none\n"}, ["eval", "{run}"], 2,
     ["model.pt: not an rnnjob model file"]),
    ("eval-model-folder", "run", {"model.pt": FOLDER}, ["eval", "{run}"], 2, ["model.pt: is a folder"]),
    ("resume-model-folder", "run", {"model.pt": FOLDER}, ["resume", "{run}"], 2, ["model.pt: is a folder"]),
    ("eval-wrong-weights", "run", {"model.pt": WRONG_WEIGHTS}, ["eval", "{run}"], 2,
     ["its weights do not fit the model its spec describes"]),
    ("resume-summary-not-json", "run", {"summary.json": b'{"name": "tiny", '}, ["resume", "{run}"], 2,
     ["summary.json: not JSON"]),
    ("watch-summary-not-json", "run", {"summary.json": b"\x00\x01"}, ["watch", "{run}"], 2, ["summary.json: not JSON"]),
    ("results-summary-not-json", "run", {"summary.json": b"[]"}, ["results", "{top}"], 2,
     ["warning: ", "summary.json: expected a mapping of fields, got list"]),
    ("watch-summary-status", "run", {"summary.json": b'{"name": "tiny", "status": "exploded"}'}, ["watch", "{run}"],
     2, ["summary.json: status: expected one of completed, failed, interrupted, stopped"]),
    ("results-summary-field", "run", {"summary.json": b'{"name": 5}'}, ["results", "{top}"], 2,
     ["summary.json: name: expected str, got 5"]),
    ("resume-summary-not-utf8", "run", {"summary.json": b'{"name": "caf\xe9"}'}, ["resume", "{run}"], 2,
     ["summary.json: not UTF-8 text"]),
    ("watch-metrics-not-json", "run", {"summary.json": DELETE, "metrics.jsonl": b'{"iteration": 10, "loss'},
     ["watch", "{run}"], 2, ["metrics.jsonl: line 1: not JSON"]),
    ("results-metrics-not-json", "run", {"metrics.jsonl": b"nonsense\n"}, ["results", "{top}"], 2,
     ["metrics.jsonl: line 1: not JSON"]),
    ("plot-metrics-not-json", "run", {"metrics.jsonl": b"nonsense\n"}, ["plot", "{top}", "-o", "{top}/p.png"], 2,
     ["nothing to plot: ", "metrics.jsonl: line 1: not JSON"]),
    ("plot-metrics-wrong", "run", {"metrics.jsonl": b'{"iteration": 1}\n'}, ["plot", "{top}", "-o", "{top}/p.png"],
     2, ["metrics.jsonl: line 1: expected an evaluation"]),
    ("watch-metrics-folder", "run", {"summary.json": DELETE, "metrics.jsonl": FOLDER}, ["watch", "{run}"], 2,
     ["metrics.jsonl: is a folder, not a file"]),
    ("resume-config-not-utf8", "run", {"config.yaml": b"name: caf\xe9\n"}, ["resume", "{run}"], 2,
     ["config.yaml: not UTF-8 text (byte 9 is 0xe9)"]),
    ("watch-config-not-utf8", "run", {"config.yaml": b"name: caf\xe9\n"}, ["watch", "{run}"], 2,
     ["config.yaml: not UTF-8 text"]),
    ("results-config-not-yaml", "run", {"config.yaml": b"train: {lr: 0.1\n"}, ["results", "{top}"], 2,
     ["config.yaml: line ", "malformed YAML"]),
    ("resume-config-not-yaml", "run", {"config.yaml": b"train: [\n"}, ["resume", "{run}"], 2, ["malformed YAML"]),
    ("resume-config-unknown-field", "run", {"config.yaml": b"trian: {}\n"}, ["resume", "{run}"], 2,
     ["config.yaml: trian: unknown field"]),
    ("resume-config-duplicate", "run", {"config.yaml": b"name: a\nname: b\n"}, ["resume", "{run}"], 2,
     ["config.yaml: line 2: 'name' is given twice"]),
    ("resume-config-gone", "run", {"config.yaml": DELETE}, ["resume", "{run}"], 2, ["not a run directory"]),
    ("watch-config-gone", "run", {"config.yaml": DELETE}, ["watch", "{run}"], 2, ["no run directory at or below it"]),
    ("resume-grid-not-yaml", "grid", {"grid.yaml": b"name: [\n"}, ["resume", "{grid}"], 2,
     ["grid.yaml: line ", "malformed YAML"]),
    ("resume-grid-no-trials", "grid", {"grid.yaml": b"name: g\ntune: {}\nrepeat: 1\nvalues: {}\n"},
     ["resume", "{grid}"], 2, ["grid.yaml: trials: missing"]),
    ("resume-grid-trial-gone", "grid", {"lr=0.1/config.yaml": DELETE}, ["resume", "{grid}"], 2,
     ["grid.yaml: names trial 'lr=0.1', but ", "holds no config.yaml"]),
    ("resume-grid-values", "grid", {"grid.yaml": b"name: g\ntune: {}\nrepeat: 1\ntrials: [lr=0.1]\nvalues: {}\n"},
     ["resume", "{grid}"], 2, ["grid.yaml: values: 'lr=0.1': expected [key, value] pairs, got None"]),
    ("resume-grid-tune", "grid", {"grid.yaml": b"name: g\ntune: {scheduler: fifo}\nrepeat: 1\ntrials: []\n"
                                                b"values: {}\n"}, ["resume", "{grid}"], 2,
     ["grid.yaml: tune.scheduler: expected one of none, asha, got 'fifo'"]),
    ("resume-grid-repeat", "grid", {"grid.yaml": b"name: g\ntune: {}\nrepeat: two\ntrials: []\nvalues: {}\n"},
     ["resume", "{grid}"], 2, ["grid.yaml: repeat: expected int, got 'two'"]),
    ("resume-search-not-a-mapping", "search", {"search.yaml": b"- 1\n"}, ["resume", "{search}"], 2,
     ["search.yaml: expected a mapping of sections at the top, got list"]),
    ("resume-search-space", "search", {"search.yaml": None}, ["resume", "{search}"], 2,
     ["search.yaml: search.space.train.lr: unknown distribution 'normal'"]),
    ("resume-search-no-tune-record", "search", {"tune": DELETE}, ["resume", "{search}"], 2,
     ["Tune's record of this search (tune/) is missing"]),
    ("plot-unknown-suffix", "run", {}, ["plot", "{top}", "-o", "{top}/p.xyz"], 2,
     ["-o ", "p.xyz: matplotlib writes ", "not .xyz files"]),
    ("plot-below-a-file", "run", {"afile": b"x"}, ["plot", "{top}", "-o", "{run}/afile/p.png"], 2,
     ["afile is a file, not a folder"]),
    ("plot-onto-a-folder", "run", {"pics.png": FOLDER}, ["plot", "{top}", "-o", "{run}/pics.png"], 2,
     ["-o ", "pics.png: is a folder"]),
]


@pytest.fixture(scope="module")
def made(tmp_path_factory, mnist_root):
    """A real run (20 iterations in this process), a grid's directory of one trial and a search's of one
    sample, each copied afresh for every case to damage."""
    import shutil

    from rnn_mnist import rundir, runs, sweep

    top = tmp_path_factory.mktemp("made")
    good = GOOD.replace("MNIST_ROOT", str(mnist_root)) + f"output: {{dir: {top / 'runs'}}}\n"
    (top / "g.yaml").write_text(good + "grid:\n  train.lr: [0.1]\n")
    grid = sweep.load_grid(top / "g.yaml")
    run, _ = runs.local(grid.trials[0].spec, "cpu", lambda line: None)
    (top / "grid").mkdir()
    rundir.write_grid(top / "grid", grid)
    shutil.copytree(run, top / "grid" / grid.trials[0].name)
    (top / "s.yaml").write_text(good + "search:\n  space:\n    train.lr: {loguniform: [0.01, 0.1]}\n")
    (top / "search").mkdir()
    rundir.write_search(top / "search", sweep.load_search(top / "s.yaml"))
    shutil.copytree(run, top / "search" / "sample-00000")
    (top / "search" / "tune").mkdir()
    (top / "search" / "tune" / "experiment_state-2026-12-01_00-00-00.json").write_text("{}")
    return {"run": run, "grid": top / "grid", "search": top / "search"}


def damaged_model(kind, run) -> bytes:
    import io

    import torch

    from rnn_mnist import rundir

    buf = io.BytesIO()
    if kind == FOREIGN_MODEL:
        torch.save({"weights": torch.zeros(3)}, buf)
    else:
        state = rundir.load_model(run)
        torch.save({**state, "model": {k: torch.zeros(2, 2) for k in state["model"]}}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("layout,damage,args,code,fragments", [c[1:] for c in RUN_CASES],
                         ids=[c[0] for c in RUN_CASES])
def test_a_damaged_run_directory_is_one_line_and_changes_nothing(tmp_path, monkeypatch, made, layout, damage, args,
                                                                  code, fragments):
    import shutil

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "")
    top = tmp_path / "top"
    where = {"run": top / "tiny", "grid": top / "grid", "search": top / "search"}
    shutil.copytree(made[layout], where[layout])
    for name, content in damage.items():
        path = where[layout] / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        if content is DELETE:
            continue
        if content is FOLDER:
            path.mkdir()
            continue
        if content is None:  # a search record whose distribution is not Ray Tune's
            text = (made["search"] / "search.yaml").read_text().replace("loguniform", "normal")
            content = text.encode()
        elif isinstance(content, str):
            content = damaged_model(content, made["run"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    before = snapshot(tmp_path)
    names = {"run": where["run"], "grid": where["grid"], "search": where["search"], "top": top}
    result = invoke(*[a.format(**names) for a in args])
    line = assert_one_line_error(result, code, *fragments)
    assert len(line) < 400, line
    assert snapshot(tmp_path) == before, "something was written"


def test_every_command_that_reads_input_is_covered_by_a_hundred_cases_or_more():
    commands = {c[2][0] for c in CASES} | {c[3][0] for c in RUN_CASES}
    assert commands == {"run", "submit", "resume", "eval", "watch", "results", "plot", "validate", "list", "status",
                        "logs", "stop", "data"}
    assert len(CASES) + len(RUN_CASES) >= 100
