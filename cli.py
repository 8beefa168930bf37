"""The `frameexit` command line: parses arguments and calls one `jobs` function per command.

Every option is declared once (:data:`OPTIONS`); :func:`_options` adds the options of a
command and hands it the `jobs` options objects built from them (ExtractOptions,
ReplayOptions, ReportOptions). Summaries are rendered by `reports.text`. Heavy imports
(torch, torchvision, pyarrow) happen inside the commands so that ``frameexit --help`` is instant.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import signal
import sys

import click

from frameexit.errors import FrameExitError, UsageError

#: Exit status of every command (the README's "Exit status" section says the same).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_GATE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and temporary-file clean-up run."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


class PathNotFoundError(FrameExitError, FileNotFoundError):
    """A file or directory named on the command line does not exist (exit 1, as a missing job file)."""


class FrameExitGroup(click.Group):
    """Maps every outcome to one exit status: a :class:`FrameExitError` is one ``Error:`` line and 1, a
    :class:`UsageError` 2 (as click's own usage errors), Ctrl-C 130, SIGTERM 143, never a traceback."""

    def invoke(self, ctx: click.Context):
        if ctx.parent is None:
            signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise click.UsageError(str(exc)) from None
        except FrameExitError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted: no output of this command was completed beyond what it reported.", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except _Terminated:
            click.echo(
                "\nTerminated (SIGTERM): no output of this command was completed beyond what it reported.", err=True
            )
            raise click.exceptions.Exit(EXIT_TERMINATED) from None


class ExistingPath(click.Path):
    """A path that must exist: a missing one is an error in the inputs (exit 1), as a missing job file is."""

    def __init__(self, **kwargs):
        super().__init__(exists=True, **kwargs)

    def convert(self, value, param, ctx):
        if not os.path.exists(value):
            name = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
            raise PathNotFoundError(f"{name} {'file' if self.file_okay else 'directory'} not found: {value}")
        return super().convert(value, param, ctx)


# ---------------------------------------------------------------------------------------------- callbacks


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """``-v`` before or after the command: the larger count wins (0 warnings, 1 info, 2 debug)."""
    root = ctx.find_root()
    verbose = max(root.meta.get("frameexit.verbose", 0), value or 0)
    root.meta["frameexit.verbose"] = verbose
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(logging.WARNING - 10 * min(verbose, 2))
    # dask.distributed logs every worker start and stop at INFO, in this process and in the worker processes
    # (they read the environment), and a worker whose heartbeat races the cluster's shutdown logs an ERROR
    # with a traceback: quiet unless asked for. A failing task still reaches us through its future.
    dask_level = "critical" if verbose == 0 else ("info" if verbose == 1 else "debug")
    os.environ["DASK_LOGGING__DISTRIBUTED"] = dask_level
    if "distributed" in sys.modules:
        logging.getLogger("distributed").setLevel(dask_level.upper())
    return verbose


def _job_first(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value.startswith("--"):
        raise click.UsageError("JOB must come first, before overrides such as --data.path_frame DIR", ctx)
    return value


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    head, _, index = value.partition(":")
    if value in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit()):
        return value
    raise click.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")


def _grid(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    from frameexit.errors import ConfigError
    from jobs.grid import parse_grid

    try:
        return tuple(parse_grid(value, name=param.opts[0]))
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    # FloatRange(min=0) lets nan and inf through, and every comparison with nan is false
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}")
    return value


def _not_with(other: str, message: str):
    """A callback refusing the option given together with ``other`` (whichever of the two click processes last)."""

    def check(ctx: click.Context, param: click.Parameter, value):
        given = [ctx.get_parameter_source(name) for name in (param.name, other)]
        if all(source not in (None, click.core.ParameterSource.DEFAULT) for source in given):
            raise click.UsageError(message, ctx)
        return value

    return check


def default_cache_root() -> str:
    """``~/.cache/frameexit`` (the convention of torch and Hugging Face); ``$FRAMEEXIT_CACHE`` overrides it."""
    return os.path.join(os.path.expanduser("~"), ".cache", "frameexit")


# ---------------------------------------------------------------------------------------------- options

SCHEDULER_OR_WORKERS = "give either --scheduler or --workers, not both"
CLASSES_EXCLUSIVE = "--classes and --classes-out exclude each other: check against a list, or write one"
LOCAL_SCHEDULERS = ("threads", "sync")

#: Every option of every command, declared once, by parameter name (in the order of the help).
OPTIONS: dict = {}


def _option(*decls: str, **attrs) -> None:
    """Declares an option in :data:`OPTIONS` (its default shown, when it has one)."""
    name = next((d for d in decls if d.isidentifier()), decls[-1].split("/")[0].lstrip("-").replace("-", "_"))
    attrs.setdefault("show_default", attrs.get("default") is not None)
    OPTIONS[name] = click.option(*decls, **attrs)


# fmt: off
_option("--cache", "cache_root", type=click.Path(file_okay=False), default=default_cache_root, envvar="FRAMEEXIT_CACHE",
        show_default="$FRAMEEXIT_CACHE or ~/.cache/frameexit", help="Cache root; the job's features live in CACHE/<key>/.")
_option("--features", type=ExistingPath(file_okay=False),
        help="Use this cache directory (CACHE/<key>) instead of searching --cache; its recorded inputs are "
        "still compared with the job's.")
_option("--shard-size", type=click.IntRange(min=1), default=64, help="Videos per shard.")
_option("--batch-videos", type=click.IntRange(min=1), default=8, help="Videos per backbone batch (x 10 frames).")
_option("--num-workers", type=click.IntRange(min=0),
        help="DataLoader processes decoding JPEGs [default: data.num_workers of the job].")
_option("--dtype", type=click.Choice(["float32", "float16"]), default="float32",
        help="Storage type of the features (part of the cache key).")
_option("--precision", type=click.Choice(["fp32", "tf32", "bf16", "fp16"]), default="fp32",
        help="Backbone arithmetic: exact fp32, TF32 matmuls, or bf16/fp16 autocast (changes the numbers and the key).")
_option("--channels-last/--no-channels-last", default=False,
        help="Channels-last memory format of the backbone (part of the cache key; replay only prefers "
        "such a cache when two are otherwise equal).")
_option("--device", default="auto", callback=_device, help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N.")
_option("--first-thresholds", callback=_grid, metavar="LIST|START:STOP:COUNT",
        help="first_threshold values, e.g. 0.9,0.95,0.99 or 0.5:1:11 (ends included) "
        "[default: replay.first_thresholds of the job, else model.first_threshold].")
_option("--gate-thresholds", callback=_grid, metavar="LIST|START:STOP:COUNT",
        help="gate_threshold values, e.g. 0.1:0.9:33 [default: replay.gate_thresholds, else model.gate_threshold].")
_option("--order", type=click.Choice(["coarse_to_fine", "sequential"]),
        help="Policy order of the frames [default: model.adaptive.input_order of the job].")
_option("--per-video", type=click.Choice(["default", "all"]), default="default",
        help="Per-video rows for the job's default setting only, or for every setting.")
_option("--scheduler", default="threads", metavar="threads|sync|ADDRESS", callback=_not_with("workers", SCHEDULER_OR_WORKERS),
        help="Where the dask tasks run: threads or sync, dask's local threaded or synchronous scheduler "
        "(extraction: on this machine), or a dask.distributed scheduler address (tcp://HOST:PORT).")
_option("--workers", type=click.IntRange(min=1), callback=_not_with("scheduler", SCHEDULER_OR_WORKERS),
        help="Run the tasks on a local dask cluster of N processes.")
_option("--budget", type=click.FloatRange(min=0), callback=_finite, metavar="GFLOPS",
        help="Report the most accurate setting costing at most GFLOPS per video.")
_option("--calibrate-on", type=ExistingPath(file_okay=False), metavar="RUN_DIR",
        help="Choose the budget setting on another run's sweep (e.g. a held-out split), evaluate it here.")
_option("--baseline", type=ExistingPath(dir_okay=False), metavar="SUMMARY_JSON",
        help="Compare the job's setting with an earlier summary.json of the same dataset, split and "
        "metrics; every checkpoint in it must be in this run.")
_option("--max-drop", type=click.FloatRange(min=0), callback=_finite,
        help="Largest accepted drop of mAP or top-1 (fraction, e.g. 0.005) against the baseline.")
_option("--max-cost-rise", type=click.FloatRange(min=0), callback=_finite,
        help="Largest accepted rise of GFLOPs per video against the baseline.")
_option("--metric", type=click.Choice(["map", "top1"]),
        help="Accuracy for the frontier, budget and curve [default: map for ActivityNet, top1 for Mini-Kinetics].")
_option("--dataset", type=click.Choice(["activitynet", "minikinetics"]), required=True,
        help="activitynet: ActivityNet-1.3 (JSON annotations; frames at 1 frame/s, both sides >= 350 pixels); "
        "minikinetics: Mini-Kinetics (Kinetics CSV; 5 frames/s, both sides >= 256 pixels).")
_option("--workers", "decoders", type=click.IntRange(min=1), default=1,
        help="Videos decoded at once, one process each (they end with this command, even if it is killed).")
_option("--prefix", default="img", help="Frame file names: PREFIX_00001.jpeg, ...")
_option("--ffmpeg", type=ExistingPath(dir_okay=False),
        help="The ffmpeg executable to run [default: ffmpeg on PATH, else the static one installed with frameexit].")
_option("--val-list", type=ExistingPath(dir_okay=False),
        help="Mini-Kinetics: mini_val_videofolder.txt (first column: video ids).")
_option("--classes", type=ExistingPath(dir_okay=False), callback=_not_with("classes_out", CLASSES_EXCLUSIVE),
        help="A class list to check the split's labels against (e.g. the official one).")
_option("--classes-out", type=click.Path(dir_okay=False), callback=_not_with("classes", CLASSES_EXCLUSIVE),
        help="Class list to write: the label names, sorted, one per line (data.path_classid).")
_option("--max-missing", type=click.IntRange(min=0), default=0,
        help="Split videos without frames allowed (some can no longer be downloaded).")
_option("--progress/--no-progress", help="Force the progress bars on or off (default: only on a terminal).")
_option("-v", "--verbose", count=True, expose_value=False, is_eager=True, callback=_set_verbosity,
        help="More log messages on stderr (-vv for debug); also accepted before the command.")
# fmt: on

JOB_ARGUMENT = click.argument("job", metavar="JOB", callback=_job_first)

#: The options each `jobs` options object is built from (a command gets a plain option or an object's).
FEATURES = ("dtype", "precision", "channels_last")  # the extraction settings in the cache key
EXTRACT = ("cache_root", "shard_size", "batch_videos", "num_workers", *FEATURES, "device", "scheduler", "workers")
GRID = ("first_thresholds", "gate_thresholds", "order", "per_video")
REPLAY = ("cache_root", "features", *GRID, "scheduler", "workers", *FEATURES)
RUN_REPLAY = tuple(n for n in REPLAY if n != "features")  # run replays the cache it has just extracted
REPORT = ("budget", "calibrate_on", "baseline", "max_drop", "max_cost_rise", "metric")


def _build(keyword: str, values: dict):
    """The `jobs` options object handed to a command as ``keyword``, from the parsed values of its options."""
    if keyword == "extract_options":
        from jobs.extract import ExtractOptions

        local = values.get("scheduler") in LOCAL_SCHEDULERS  # dask's local schedulers: extraction on this machine
        return ExtractOptions(**dict(values, scheduler=None) if local else values)
    from jobs.replay import ReplayOptions
    from jobs.report import ReportOptions

    return {"replay_options": ReplayOptions, "report_options": ReportOptions}[keyword](**values)


def _options(*plain: str, **objects: tuple[str, ...]):
    """Adds the options named in ``plain`` and those that ``objects`` (keyword -> option names) are built
    from, each once and in the order of :data:`OPTIONS`; the command gets the ``plain`` values as they
    are, and one options object per keyword of ``objects`` (see :func:`_build`) instead of their values."""
    grouped = {n for group in objects.values() for n in group}
    names = sorted(grouped.union(plain), key=list(OPTIONS).index)

    def decorate(f):
        @functools.wraps(f)
        def command(*args, **kwargs):
            values = {name: kwargs.pop(name) for name in grouped}
            built = {k: _build(k, {n: values[n] for n in group}) for k, group in objects.items()}
            return f(*args, **built, **kwargs)

        for name in reversed(names):
            command = OPTIONS[name](command)
        return command

    return decorate


def _out(help: str, *, directory: bool = True, exists: bool = False, **attrs):
    """``--out``: each command writes something else there."""
    kind = (ExistingPath if exists else click.Path)(**({"file_okay": False} if directory else {"dir_okay": False}))
    return click.option(
        "--out", "out_dir" if directory else "out_path", required="default" not in attrs, type=kind, help=help, **attrs
    )


JOB_HELP = """
JOB is a YAML job file: the official FrameExit configs
(jobs/activitynet_inference_2d.yml, jobs/minikinetics_inference_2d.yml, also
found by file name alone) or any file in their format. Any key can be
overridden after JOB with the official syntax, e.g. --data.path_frame DIR
--checkpoint.init FILE --model.first_threshold 0.9 (or --key=value).
"""


def _check_overrides(ctx: click.Context) -> None:
    """What click left after JOB must be job-key overrides (--section.key VALUE or --section.key=VALUE); an
    unknown option or an extra argument there is a usage error, as in every other command."""
    from jobs.config import SCHEMA

    args, i = ctx.args, 0
    while i < len(args):
        key, eq, _ = args[i].partition("=")
        if key.startswith("--") and ("." in key or key[2:] in SCHEMA):
            i += 1 if eq else 2  # an override and its value: load_job checks both
        elif key.startswith("-"):
            known = [opt for param in ctx.command.params for opt in param.opts if opt.startswith("--")]
            raise click.NoSuchOption(key, possibilities=known, ctx=ctx)
        else:
            raise click.UsageError(f"Got unexpected extra argument ({args[i]})", ctx)


def _job_command(group: click.Group, *args, **kwargs):
    """``group.command`` that takes JOB first, then any job-key overrides; the command receives the loaded
    job (a jobs.config.Job) as ``job``, read after every option was parsed and checked."""

    def decorate(f):
        @functools.wraps(f)
        def command(*a, job: str, **kw):
            from jobs.config import load_job

            ctx = click.get_current_context()
            _check_overrides(ctx)
            return f(*a, job=load_job(job, ctx.args), **kw)

        settings = dict(ignore_unknown_options=True, allow_extra_args=True)
        cmd = group.command(*args, context_settings=settings, **kwargs)(JOB_ARGUMENT(command))
        # the docstring is indented and JOB_HELP is not: clean both before joining, or click keeps the indent
        cmd.help = inspect.cleandoc(cmd.help or "") + "\n\n" + inspect.cleandoc(JOB_HELP)
        return cmd

    return decorate


def _echo_report(text: str, result) -> None:
    """A report's summary, then its regressions on stderr and exit status 3 when the baseline gate fails."""
    from jobs.report import REGRESSION_EXIT
    from reports.text import render_regressions

    click.echo(text)
    if result.regressed:
        click.echo(render_regressions(result.summary), err=True)
        raise SystemExit(REGRESSION_EXIT)


# ---------------------------------------------------------------------------------------------- commands


@click.group(cls=FrameExitGroup, context_settings=dict(help_option_names=["-h", "--help"]))
@click.version_option(package_name="frameexit")
@OPTIONS["verbose"]
def main() -> None:
    """Evaluate FrameExit early-exit video models on whole validation sets.

    Sequential inference (infer), cached per-frame features (extract),
    threshold sweeps over them (replay), reports (report), all three at once
    (run), head training (train), the embedded demo (demo) and data
    preparation from raw videos (prepare).

    Nothing is ever downloaded: weights come from checkpoints or files already on disk.

    Exit status of every command: 0 success, 1 error (one line naming the
    file, video or key), 2 usage error, 3 baseline gate failed (report, run),
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """


@_job_command(
    main,
    epilog="""\b
Example:
  frameexit infer jobs/activitynet_inference_2d.yml \\
      --data.path_frame frames/ --data.path_split split_val.txt \\
      --data.path_label activity_net.v1-3.min.json --data.path_classid classes.txt \\
      --checkpoint.init activitynet_checkpoint_25gmac.pth --out runs/anet
""",
)
@_out("Output directory for videos.parquet and metrics.json.")
@_options("device", "progress", "verbose")
def infer(job, out_dir: str, device: str, progress: bool | None) -> None:
    """Sequential early-exit inference, as the official script computes it.

    Reads each video's frames one at a time in the coarse-to-fine order and
    stops at the first step whose exit rule fires, so frames after the exit
    never go through the backbone (they are only decoded, to check that they
    can be read: a video with an unreadable sampled frame is skipped here as
    in extract, so both evaluate the same videos). Prints mAP, top-1, GFLOPs
    (paper convention), measured GMACs and the exit histogram, and writes
    OUT/videos.parquet (one row per video) and OUT/metrics.json. Split videos
    without frames are skipped and listed with the reason.
    """
    from jobs.infer import infer as run_infer
    from reports.text import render_infer_summary

    click.echo(render_infer_summary(run_infer(job, out_dir, device=device, progress=progress)))


@_job_command(
    main,
    epilog="""\b
Examples:
  frameexit extract jobs/activitynet_inference_2d.yml --data.path_frame frames/ \\
      --checkpoint.init activitynet_checkpoint_25gmac.pth --data.num_workers 8
  frameexit extract JOB --scheduler tcp://10.0.0.5:8786     # shards on a dask cluster
""",
)
@_options("progress", "verbose", extract_options=EXTRACT)
def extract(job, extract_options, progress: bool | None) -> None:
    """Cache per-frame backbone features of every sampled frame in HDF5 shards.

    All 10 sampled frames of every video go through the backbone once, in
    batches of several videos, on CUDA when present. The cache directory is
    named by a key of everything the features depend on (backbone weights,
    preprocessing, sampling, dtype, precision, dataset files), so a rerun over a
    complete cache does no backbone work, an interrupted run resumes from its
    finished shards, and a changed input gets a new directory. Videos without
    frames or with unreadable JPEGs are recorded with the reason in
    manifest.json and listed at the end. With several GPUs, shards are spread
    over one dask-cuda worker per GPU (pip install '.[gpu]').
    """
    from jobs.extract import extract as run_extract
    from reports.text import render_extract_summary

    click.echo(render_extract_summary(run_extract(job, extract_options, progress=progress)))


@_job_command(
    main,
    epilog="""\b
Examples:
  frameexit replay JOB --out runs/sweep --first-thresholds 0.9,0.95,0.99 --gate-thresholds 0.1:0.9:33
  frameexit replay JOB --out runs/ablation --order sequential
  frameexit replay JOB --checkpoint.init '[beta1e-3.pth, beta1e-5.pth]' --out runs/betas
""",
)
@_out("Output directory for sweep.parquet, videos.parquet and replay.json.")
@_options("progress", "verbose", replay_options=REPLAY)
def replay(job, out_dir: str, replay_options, progress: bool | None) -> None:
    """Sweep exit thresholds over cached features: milliseconds per operating point.

    Reads the feature cache of JOB (written by frameexit extract), computes
    once per shard and checkpoint head everything any threshold needs
    (projection, pooling in policy order, all classifiers and gates), then
    every setting of the grid FIRST_THRESHOLDS x GATE_THRESHOLDS: exit steps,
    mAP, top-1, GFLOPs (paper convention), measured GMACs, mean frames and the
    exit histogram. Several checkpoints (checkpoint.init as a list) replay over
    one cache when they share its backbone weights. Results equal those of
    frameexit infer with the same thresholds, video by video.
    """
    from jobs.replay import replay as run_replay
    from reports.text import render_replay_summary

    click.echo(render_replay_summary(run_replay(job, out_dir, replay_options, progress=progress)))


@main.command(
    epilog="""\b
Exit status: 0, or 3 when the --baseline gate fails: a drop or rise beyond
--max-drop / --max-cost-rise, a baseline checkpoint missing from this run, or
nothing compared (1 for errors, 2 for usage errors).
\b
Examples:
  frameexit report --out runs/anet
  frameexit report --out runs/anet --budget 20 --calibrate-on runs/anet-heldout
  frameexit report --out runs/anet --baseline main/summary.json --max-drop 0.005 --max-cost-rise 0.5
"""
)
@_out("Directory of a replay (sweep.parquet, replay.json); the report is written there too.", exists=True)
@_options("verbose", report_options=REPORT)
def report(out_dir: str, report_options) -> None:
    """Write summary.md, summary.json and curve.png from a replay's outputs.

    summary.md holds the results table at the job's setting, the Pareto
    frontier of the sweep, the exit histogram, the evaluated and skipped videos
    and the provenance (checkpoint digests, cache key, dataset files,
    versions); summary.json the same facts for machines; curve.png accuracy
    (mAP for ActivityNet, top-1 for Mini-Kinetics) against GFLOPs, with the
    published FrameExit curve for the ResNet-50 ActivityNet job.
    """
    from jobs.report import report as run_report
    from reports.text import render_report_summary

    result = run_report(out_dir, report_options)
    _echo_report(render_report_summary(result), result)


@_job_command(
    main,
    epilog="""\b
Exit status: 0, or 3 when the baseline gate finds a regression.
\b
Example:
  frameexit run jobs/activitynet_inference_2d.yml --data.path_frame ... --checkpoint.init ... \\
      --gate-thresholds 0:1:21 --first-thresholds 0.5:1:11 --out runs/anet
""",
)
@_out("Output directory for every artefact.")
@_options("progress", "verbose", extract_options=EXTRACT, replay_options=RUN_REPLAY, report_options=REPORT)
def run(job, out_dir: str, extract_options, replay_options, report_options, progress: bool | None) -> None:
    """The whole job: extract (reusing the cache), replay, report.

    Accepts the options of the three stages and the official config files
    as job files; prints one progress display per stage and, at the end,
    where the artefacts are: OUT/sweep.parquet, OUT/videos.parquet,
    OUT/replay.json, OUT/summary.md, OUT/summary.json and OUT/curve.png.
    """
    from jobs.run import run as run_job
    from reports.text import render_extract_summary, render_replay_summary, render_run_summary

    renderers = {"extract": render_extract_summary, "replay": render_replay_summary}
    result = run_job(
        job,
        out_dir,
        extract_options=extract_options,
        replay_options=replay_options,
        report_options=report_options,
        progress=progress,
        on_stage=lambda name, result: click.echo(renderers[name](result)) if name in renderers else None,
    )
    _echo_report(render_run_summary(out_dir, result.report), result.report)


@_job_command(
    main,
    epilog="""\b
Examples:
  frameexit train jobs/activitynet_inference_2d.yml --data.path_split split_train.txt \\
      --checkpoint.init backbone.pth --train.beta 1e-3 --out frameexit_beta1e-3.pth
  frameexit train JOB --train.val_path_split split_val.txt --train.epochs_classifier 40 --out head.pth
""",
)
@_out("Checkpoint file to write.", directory=False)
@_options("progress", "verbose", extract_options=("cache_root", "num_workers", "device"))
def train(job, out_path: str, extract_options, progress: bool | None) -> None:
    """Train a FrameExit head (projection, classifiers, gates) on cached features.

    Extracts the features of the job's split (data.path_split, a training
    split) with the backbone of checkpoint.init, or reuses them, then trains
    in two stages: projection and the 10 classifiers with cross-entropy at
    every step; then the 9 gates on pseudo-labels (exit at step t when that
    step's loss is at most train.beta * exp(t / 2)). The checkpoint is written
    in the official format with the backbone weights, so infer, replay and the
    official code load it. Hyper-parameters are the job's train.* keys:
    epochs_classifier (20), epochs_gates (10), batch_size (64), lr (1e-3),
    lr_gates (1e-3), weight_decay (0), beta (1e-3), loss (softmax|bce),
    seed (0), hidden_dim (4096), val_path_split (none: no validation).
    """
    from jobs.train import train as run_train
    from reports.text import render_train_summary

    click.echo(render_train_summary(run_train(job, out_path, extract_options=extract_options, progress=progress)))


@main.command(
    epilog="""\b
Example:
  frameexit demo --out demo-out     # under 5 minutes on 2 CPU cores
"""
)
@_out("Directory for the demo's data, cache, checkpoints and report.", default="demo-out", show_default=True)
@_options("progress", "verbose")
def demo(out_dir: str, progress: bool | None) -> None:
    """The whole method on an embedded synthetic dataset; needs nothing but this package.

    Generates 1,500 short videos in the ActivityNet layout (1,200 training,
    300 validation; 12 classes: a shape in a colour; easy videos show it in
    every frame, hard ones, 30 %, in 4 of the 10 sampled frames), uses a
    ResNet-18 with a fixed-seed random initialisation (no pretrained weights
    are downloaded), extracts features of both splits, trains FrameExit heads
    for two values of beta, replays a threshold sweep on the validation split
    for each, and writes the report with the accuracy/GFLOPs curve.
    """
    from jobs.demo import demo as run_demo
    from reports.text import render_demo_summary

    click.echo(render_demo_summary(run_demo(out_dir, progress=progress, say=lambda s: click.echo(s, err=True))))


@main.group(cls=FrameExitGroup)
@OPTIONS["verbose"]
def prepare() -> None:
    """From raw videos and annotation files to the official frame folders and split files."""


@prepare.command(
    "frames",
    short_help="Videos to the official frame folders, by the official ffmpeg command.",
    epilog="""\b
Examples:
  frameexit prepare frames videos/activitynet/ \\
      data/activitynet_v1.3/fps1_res350_hq --dataset activitynet --workers 8
  frameexit prepare frames videos/kinetics_val/ \\
      data/minikinetics/fps5_res256_hq --dataset minikinetics
""",
)
@click.argument("videos_dir", type=ExistingPath(file_okay=False))
@click.argument("frames_dir", type=click.Path(file_okay=False))
@_options("dataset", "decoders", "prefix", "ffmpeg", "progress", "verbose")
def prepare_frames(
    videos_dir: str, frames_dir: str, dataset: str, decoders: int, prefix: str, ffmpeg: str | None, progress
) -> None:
    """Decode every video of VIDEOS_DIR into FRAMES_DIR/KEY/PREFIX_00001.jpeg, ...

    KEY is the video's split key, its file name with the extension .mp4
    (v_abc.mkv is written to v_abc.mp4/), as the split files name videos.
    Runs the official command line itself for each video: ffmpeg -i VIDEO -vf
    fps=R,scale=S:S:force_original_aspect_ratio=increase -q:v 2
    FRAMES_DIR/KEY/PREFIX_%05d.jpeg, with --ffmpeg, else the ffmpeg on PATH,
    else the one imageio-ffmpeg bundles. The command and the FFmpeg version
    are recorded in FRAMES_DIR/prepare-frames.json; a run that would add
    frames with another command or FFmpeg version stops before any work.
    Resumable: videos whose folder has frames are skipped, folders that a
    killed run left half written are redone; each folder is renamed into
    place when complete. Videos shorter than one frame are listed (no
    frames, as with the official command). A video that cannot be decoded
    does not stop the others: the failures are listed at the end, with exit
    status 1.
    """
    from jobs.ffmpeg import ffmpeg_filter
    from jobs.prepare import PRESETS, PrepareError, prepare_frames
    from jobs.progress import progress as bar
    from reports.text import render_frames_summary

    result = prepare_frames(
        videos_dir,
        frames_dir,
        dataset=dataset,
        workers=decoders,
        prefix=prefix,
        ffmpeg=ffmpeg,
        progress=lambda it, n: bar(it, desc="prepare frames", total=n, enabled=progress),
    )
    click.echo(render_frames_summary(result, ffmpeg_filter=ffmpeg_filter(**PRESETS[dataset]), frames_dir=frames_dir))
    if result.failed:
        raise PrepareError(f"{len(result.failed)} video(s) could not be decoded (listed above)")


@prepare.command(
    "splits",
    short_help="The validation split file and a class list from annotations.",
    epilog="""\b
Examples:
  frameexit prepare splits data/activitynet/activity_net.v1-3.min.json \\
      --dataset activitynet --out data/activitynet/split_val_v1.3.txt \\
      --classes-out data/activitynet/classes.txt
  frameexit prepare splits data/minikinetics/kinetics_val.csv \\
      --dataset minikinetics \\
      --val-list data/minikinetics/mini_val_videofolder.txt \\
      --out data/minikinetics/split_val_minikinetics.txt \\
      --classes-out data/minikinetics/minik_classInd.txt
""",
)
@click.argument("annotation", type=ExistingPath(dir_okay=False))
@_out("Split file to write.", directory=False)
@_options("dataset", "val_list", "classes", "classes_out", "verbose")
def prepare_splits(annotation, dataset: str, out_path: str, val_list, classes, classes_out) -> None:
    """Build the validation split file from ANNOTATION, as the official help text describes.

    ActivityNet: every video whose subset is validation, as v_<id>.mp4.

    Mini-Kinetics: the videos of mini_val_videofolder.txt found in the
    Kinetics CSV.

    With --classes, labels missing from that class list are listed. With
    --classes-out, the class list is written: ActivityNet, every label of
    the JSON (200); Mini-Kinetics, the labels of the split's videos (the CSV
    holds all 400 Kinetics classes), sorted by Python string order. The class
    index is the line number, and a checkpoint's outputs follow the class list
    it was trained with; the official repository does not publish its lists,
    so with the released checkpoints use the official list if you have it
    (check it with --classes).
    """
    from frameexit.atomic import atomic_write
    from jobs.prepare import build_split
    from reports.text import render_splits_summary

    split = build_split(annotation, dataset=dataset, val_list=val_list, classes=classes)
    for path, lines in ((out_path, split.keys), (classes_out, split.classes)):
        if path:
            with atomic_write(path, "w") as handle:
                handle.write("".join(line + "\n" for line in lines))
    click.echo(render_splits_summary(split, out_path=out_path, classes=classes, classes_out=classes_out))


@_job_command(
    prepare,
    "check",
    short_help="Before a long run: is every split video ready to evaluate?",
    epilog="""\b
Example:
  frameexit prepare check jobs/activitynet_inference_2d.yml \\
      --data.path_frame data/activitynet_v1.3/fps1_res350_hq --max-missing 5
""",
)
@_options("max_missing", "verbose")
def prepare_check(job, max_missing: int) -> None:
    """Before a long run: split videos with frames, missing or empty folders, unknown labels, frame counts.

    Prints a summary, then fails (exit status 1) if more than --max-missing
    split videos have no frames or if a label is not in the class list.
    """
    from jobs.prepare import PrepareError, check
    from reports.text import render_check_summary

    result = check(job)
    click.echo(render_check_summary(result))
    failure = result.failure(max_missing)
    if failure:
        raise PrepareError(failure)


if __name__ == "__main__":
    main()
