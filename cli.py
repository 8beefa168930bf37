"""The `frameexit` command line: parses arguments and calls one `jobs` function per command.

Heavy imports (torch, torchvision, pyarrow) happen inside the commands so that
``frameexit --help`` is instant.
"""

from __future__ import annotations

import inspect
import logging
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


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """``-v`` before or after the command: the larger count wins (0 warnings, 1 info, 2 debug)."""
    root = ctx.find_root()
    verbose = max(root.meta.get("frameexit.verbose", 0), value or 0)
    root.meta["frameexit.verbose"] = verbose
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)
    # dask.distributed logs every worker start and stop at INFO, in this process and in the worker processes
    # (they read the environment): quiet unless asked for
    dask_level = "error" if verbose == 0 else ("info" if verbose == 1 else "debug")
    os.environ["DASK_LOGGING__DISTRIBUTED"] = dask_level
    if "distributed" in sys.modules:
        logging.getLogger("distributed").setLevel(dask_level.upper())
    return verbose


VERBOSE_OPTION = click.option(
    "-v",
    "--verbose",
    count=True,
    expose_value=False,
    is_eager=True,
    callback=_set_verbosity,
    help="More log messages on stderr (-vv for debug); also accepted before the command.",
)

OVERRIDES = dict(ignore_unknown_options=True, allow_extra_args=True, help_option_names=["-h", "--help"])

JOB_HELP = """
JOB is a YAML job file: the official FrameExit configs
(jobs/activitynet_inference_2d.yml, jobs/minikinetics_inference_2d.yml, also
found by file name alone) or any file in their format. Any key can be
overridden after JOB with the official syntax, e.g. --data.path_frame DIR
--checkpoint.init FILE --model.first_threshold 0.9 (or --key=value).
"""


def _with_job_help(command: click.Command) -> None:
    # the docstring is indented and JOB_HELP is not: clean both before joining, or click keeps the indent
    command.help = inspect.cleandoc(command.help or "") + "\n\n" + inspect.cleandoc(JOB_HELP)


def _job_first(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value.startswith("--"):
        raise click.UsageError("JOB must come first, before overrides such as --data.path_frame DIR", ctx)
    return value


JOB_ARGUMENT = click.argument("job", metavar="JOB", callback=_job_first)


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    head, _, index = value.partition(":")
    if value in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit()):
        return value
    raise click.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")


def default_cache_root() -> str:
    """``~/.cache/frameexit`` (the convention of torch and Hugging Face); ``$FRAMEEXIT_CACHE`` overrides it."""
    return os.path.join(os.path.expanduser("~"), ".cache", "frameexit")


def _grid(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    from frameexit.errors import ConfigError
    from jobs.grid import parse_grid

    try:
        return tuple(parse_grid(value, name=param.opts[0]))
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _options(*decorators):
    """Several click options applied as one decorator (shared by the commands that take them)."""

    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


CACHE_OPTION = click.option(
    "--cache",
    "cache_root",
    envvar="FRAMEEXIT_CACHE",
    default=default_cache_root,
    show_default="$FRAMEEXIT_CACHE or ~/.cache/frameexit",
    type=click.Path(file_okay=False),
    help="Cache root; the job's features live in CACHE/<key>/.",
)
PROGRESS_OPTION = click.option(
    "--progress/--no-progress", default=None, help="Force the progress bars on or off (default: only on a terminal)."
)
DEVICE_OPTION = click.option(
    "--device",
    default="auto",
    show_default=True,
    callback=_device,
    help="auto (CUDA when available), cpu, cuda or cuda:N.",
)
FEATURE_OPTIONS = _options(
    click.option(
        "--dtype",
        type=click.Choice(["float32", "float16"]),
        default="float32",
        show_default=True,
        help="Storage type of the features (part of the cache key).",
    ),
    click.option(
        "--precision",
        type=click.Choice(["fp32", "tf32", "bf16", "fp16"]),
        default="fp32",
        show_default=True,
        help="Backbone arithmetic: exact fp32, TF32 matmuls, or bf16/fp16 autocast (changes the numbers and the key).",
    ),
)
EXTRACT_OPTIONS = _options(
    click.option("--shard-size", default=64, show_default=True, type=click.IntRange(min=1), help="Videos per shard."),
    click.option(
        "--batch-videos",
        default=8,
        show_default=True,
        type=click.IntRange(min=1),
        help="Videos per backbone batch (x 10 frames).",
    ),
    click.option(
        "--num-workers",
        type=click.IntRange(min=0),
        default=None,
        help="DataLoader processes decoding JPEGs [default: data.num_workers of the job].",
    ),
    FEATURE_OPTIONS,
    click.option(
        "--channels-last/--no-channels-last", default=False, show_default=True, help="Channels-last memory format."
    ),
    DEVICE_OPTION,
)
GRID_OPTIONS = _options(
    click.option(
        "--first-thresholds",
        callback=_grid,
        default=None,
        metavar="LIST|START:STOP:COUNT",
        help="first_threshold values, e.g. 0.9,0.95,0.99 or 0.5:1:11 (ends included) "
        "[default: replay.first_thresholds of the job, else model.first_threshold].",
    ),
    click.option(
        "--gate-thresholds",
        callback=_grid,
        default=None,
        metavar="LIST|START:STOP:COUNT",
        help="gate_threshold values, e.g. 0.1:0.9:33 [default: replay.gate_thresholds, else model.gate_threshold].",
    ),
    click.option(
        "--order",
        type=click.Choice(["coarse_to_fine", "sequential"]),
        default=None,
        help="Policy order of the frames [default: model.adaptive.input_order of the job].",
    ),
    click.option(
        "--per-video",
        type=click.Choice(["default", "all"]),
        default="default",
        show_default=True,
        help="Per-video rows for the job's default setting only, or for every setting.",
    ),
)
WORKERS_OPTION = click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Run the tasks on a local dask cluster of N processes."
)


def _echo_extract(result) -> None:
    from reports.text import render_extract_summary

    click.echo(
        render_extract_summary(
            cache_dir=result.cache_dir,
            key=result.key,
            n_videos=result.n_videos,
            n_shards=result.n_shards,
            shards_written=result.shards_written,
            frames=result.frames,
            seconds=result.seconds,
            skipped=result.skipped,
        )
    )


def _echo_replay(result) -> None:
    from reports.text import render_replay_summary

    paths = {"sweep": result.sweep_path, "videos": result.videos_path, "replay": result.replay_path}
    click.echo(render_replay_summary(result.summary, result.summary["default_metrics"], paths))


@click.group(cls=FrameExitGroup, context_settings=dict(help_option_names=["-h", "--help"]))
@click.version_option(package_name="frameexit")
@VERBOSE_OPTION
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


@main.command(
    context_settings=OVERRIDES,
    epilog="""\b
Example:
  frameexit infer jobs/activitynet_inference_2d.yml \\
      --data.path_frame frames/ --data.path_split split_val.txt \\
      --data.path_label activity_net.v1-3.min.json --data.path_classid classes.txt \\
      --checkpoint.init activitynet_checkpoint_25gmac.pth --out runs/anet
""",
)
@JOB_ARGUMENT
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory for videos.parquet and metrics.json.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    callback=_device,
    help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N.",
)
@click.option(
    "--progress/--no-progress", default=None, help="Force the progress bar on or off (default: only on a terminal)."
)
@VERBOSE_OPTION
@click.pass_context
def infer(ctx: click.Context, job: str, out_dir: str, device: str, progress: bool | None) -> None:
    """Sequential early-exit inference, as the official script computes it.

    Reads each video's frames one at a time in the coarse-to-fine order and
    stops at the first step whose exit rule fires, so frames after the exit
    never go through the backbone (they are only decoded, to check that they
    can be read: a video with an unreadable sampled frame is skipped here as
    in extract, so both evaluate the same videos). Prints mAP, top-1, GFLOPs (paper convention), measured
    GMACs and the exit histogram, and writes OUT/videos.parquet (one row per
    video) and OUT/metrics.json. Split videos without frames are skipped and
    listed with the reason.
    """
    from jobs.config import load_job

    loaded = load_job(job, ctx.args)  # a typo in the job is reported before torch is imported
    from jobs.infer import infer as run_infer
    from reports.text import render_infer_summary

    result = run_infer(loaded, out_dir, device=device, progress=progress)
    click.echo(render_infer_summary(result.metrics, {"videos": result.videos_path, "metrics": result.metrics_path}))


_with_job_help(infer)


@main.command(
    context_settings=OVERRIDES,
    epilog="""\b
Examples:
  frameexit extract jobs/activitynet_inference_2d.yml --data.path_frame frames/ \\
      --checkpoint.init activitynet_checkpoint_25gmac.pth --data.num_workers 8
  frameexit extract JOB --scheduler tcp://10.0.0.5:8786     # shards on a dask cluster
""",
)
@JOB_ARGUMENT
@CACHE_OPTION
@EXTRACT_OPTIONS
@click.option(
    "--scheduler", default=None, metavar="ADDRESS", help="Send shard tasks to this dask.distributed scheduler."
)
@WORKERS_OPTION
@PROGRESS_OPTION
@VERBOSE_OPTION
@click.pass_context
def extract(
    ctx: click.Context,
    job: str,
    cache_root: str,
    shard_size: int,
    batch_videos: int,
    num_workers: int | None,
    dtype: str,
    precision: str,
    channels_last: bool,
    device: str,
    scheduler: str | None,
    workers: int | None,
    progress: bool | None,
) -> None:
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
    from jobs.config import load_job

    loaded = load_job(job, ctx.args)
    from jobs.extract import ExtractOptions
    from jobs.extract import extract as run_extract

    options = ExtractOptions(
        cache_root=cache_root,
        shard_size=shard_size,
        batch_videos=batch_videos,
        dtype=dtype,
        precision=precision,
        channels_last=channels_last,
        device=device,
        num_workers=num_workers,
        scheduler=scheduler,
        workers=workers,
    )
    result = run_extract(loaded, options, progress=progress)
    _echo_extract(result)


_with_job_help(extract)


@main.command(
    context_settings=OVERRIDES,
    epilog="""\b
Examples:
  frameexit replay JOB --out runs/sweep --first-thresholds 0.9,0.95,0.99 --gate-thresholds 0.1:0.9:33
  frameexit replay JOB --out runs/ablation --order sequential
  frameexit replay JOB --checkpoint.init '[beta1e-3.pth, beta1e-5.pth]' --out runs/betas
""",
)
@JOB_ARGUMENT
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory for sweep.parquet, videos.parquet and replay.json.",
)
@CACHE_OPTION
@click.option(
    "--features",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Use this cache directory (CACHE/<key>) as it is, without computing the key.",
)
@GRID_OPTIONS
@click.option(
    "--scheduler",
    default="threads",
    show_default=True,
    metavar="threads|sync|ADDRESS",
    help="dask's local threaded or synchronous scheduler, or a dask.distributed scheduler address (tcp://HOST:PORT).",
)
@WORKERS_OPTION
@FEATURE_OPTIONS
@PROGRESS_OPTION
@VERBOSE_OPTION
@click.pass_context
def replay(
    ctx: click.Context,
    job: str,
    out_dir: str,
    cache_root: str,
    features: str | None,
    first_thresholds: tuple | None,
    gate_thresholds: tuple | None,
    order: str | None,
    per_video: str,
    scheduler: str,
    workers: int | None,
    dtype: str,
    precision: str,
    progress: bool | None,
) -> None:
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
    from jobs.config import load_job

    loaded = load_job(job, ctx.args)
    from jobs.replay import ReplayOptions
    from jobs.replay import replay as run_replay

    if workers and scheduler != "threads":
        raise click.UsageError("give either --scheduler or --workers, not both")
    options = ReplayOptions(
        cache_root=cache_root,
        features=features,
        first_thresholds=first_thresholds,
        gate_thresholds=gate_thresholds,
        order=order,
        per_video=per_video,
        scheduler=scheduler,
        workers=workers,
        dtype=dtype,
        precision=precision,
    )
    result = run_replay(loaded, out_dir, options, progress=progress)
    _echo_replay(result)


_with_job_help(replay)


REPORT_FIELDS = ("budget", "calibrate_on", "baseline", "max_drop", "max_cost_rise", "metric")


def _report_options(f):
    """The report's options, handed to the command as one ``report_options`` (a jobs.report.ReportOptions)."""
    import functools
    import math

    @functools.wraps(f)
    def collect(*args, **kwargs):
        from jobs.report import ReportOptions

        options = ReportOptions(**{name: kwargs.pop(name) for name in REPORT_FIELDS})
        return f(*args, report_options=options, **kwargs)

    def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        # FloatRange(min=0) lets nan and inf through, and every comparison with nan is false
        if value is not None and not math.isfinite(value):
            raise click.BadParameter(f"must be a finite number, got {value}")
        return value

    for decorator in reversed(
        [
            click.option(
                "--budget",
                type=click.FloatRange(min=0),
                default=None,
                callback=finite,
                metavar="GFLOPS",
                help="Report the most accurate setting costing at most GFLOPS per video.",
            ),
            click.option(
                "--calibrate-on",
                type=click.Path(file_okay=False, exists=True),
                default=None,
                metavar="RUN_DIR",
                help="Choose the budget setting on another run's sweep (e.g. a held-out split), evaluate it here.",
            ),
            click.option(
                "--baseline",
                type=click.Path(dir_okay=False, exists=True),
                default=None,
                metavar="SUMMARY_JSON",
                help="Compare the job's setting with an earlier summary.json of the same dataset, split and "
                "metrics; every checkpoint in it must be in this run.",
            ),
            click.option(
                "--max-drop",
                type=click.FloatRange(min=0),
                default=None,
                callback=finite,
                help="Largest accepted drop of mAP or top-1 (fraction, e.g. 0.005) against the baseline.",
            ),
            click.option(
                "--max-cost-rise",
                type=click.FloatRange(min=0),
                default=None,
                callback=finite,
                help="Largest accepted rise of GFLOPs per video against the baseline.",
            ),
            click.option(
                "--metric",
                type=click.Choice(["map", "top1"]),
                default=None,
                help="Accuracy for the frontier, budget and curve [default: map for ActivityNet, top1 for Mini-Kinetics].",
            ),
        ]
    ):
        collect = decorator(collect)
    return collect


def _finish_report(result) -> None:
    from jobs.report import REGRESSION_EXIT

    paths = result.paths
    click.echo(f"  report: {paths['summary.md']}\n          {paths['summary.json']}\n          {paths['curve.png']}")
    if result.regressed:
        for line in result.summary["baseline"]["regressions"]:
            click.echo(f"REGRESSION: {line}", err=True)
        raise SystemExit(REGRESSION_EXIT)


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
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="Directory of a replay (sweep.parquet, replay.json); the report is written there too.",
)
@_report_options
@VERBOSE_OPTION
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

    result = run_report(out_dir, report_options)
    click.echo(
        f"FrameExit report: {result.summary['n_settings']} settings, {len(result.summary['frontier'])} on the frontier"
    )
    _finish_report(result)


@main.command(
    context_settings=OVERRIDES,
    epilog="""\b
Exit status: 0, or 3 when the baseline gate finds a regression.
\b
Example:
  frameexit run jobs/activitynet_inference_2d.yml --data.path_frame ... --checkpoint.init ... \\
      --gate-thresholds 0:1:21 --first-thresholds 0.5:1:11 --out runs/anet
""",
)
@JOB_ARGUMENT
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory for every artefact."
)
@CACHE_OPTION
@EXTRACT_OPTIONS
@GRID_OPTIONS
@click.option(
    "--scheduler", default=None, metavar="ADDRESS", help="A dask.distributed scheduler for extraction and replay."
)
@WORKERS_OPTION
@_report_options
@PROGRESS_OPTION
@VERBOSE_OPTION
@click.pass_context
def run(
    ctx: click.Context,
    job: str,
    out_dir: str,
    cache_root: str,
    shard_size: int,
    batch_videos: int,
    num_workers: int | None,
    dtype: str,
    precision: str,
    channels_last: bool,
    device: str,
    first_thresholds,
    gate_thresholds,
    order: str | None,
    per_video: str,
    scheduler: str | None,
    workers: int | None,
    report_options,
    progress: bool | None,
) -> None:
    """The whole job: extract (reusing the cache), replay, report.

    Accepts the options of the three stages and the official config files
    as job files; prints one progress display per stage and, at the end,
    where the artefacts are: OUT/sweep.parquet, OUT/videos.parquet,
    OUT/replay.json, OUT/summary.md, OUT/summary.json and OUT/curve.png.
    """
    from jobs.config import load_job

    loaded = load_job(job, ctx.args)
    from jobs.extract import ExtractOptions
    from jobs.replay import ReplayOptions
    from jobs.run import run as run_job

    extract_options = ExtractOptions(
        cache_root=cache_root,
        shard_size=shard_size,
        batch_videos=batch_videos,
        dtype=dtype,
        precision=precision,
        channels_last=channels_last,
        device=device,
        num_workers=num_workers,
        scheduler=scheduler,
        workers=workers,
    )
    replay_options = ReplayOptions(
        cache_root=cache_root,
        first_thresholds=first_thresholds,
        gate_thresholds=gate_thresholds,
        order=order,
        per_video=per_video,
        scheduler=scheduler or "threads",
        workers=workers,
        dtype=dtype,
        precision=precision,
    )

    def on_stage(name, result) -> None:
        if name == "extract":
            _echo_extract(result)
        elif name == "replay":
            _echo_replay(result)

    result = run_job(
        loaded,
        out_dir,
        extract_options=extract_options,
        replay_options=replay_options,
        report_options=report_options,
        progress=progress,
        on_stage=on_stage,
    )
    click.echo(f"FrameExit run: artefacts in {out_dir}")
    _finish_report(result.report)


_with_job_help(run)


@main.command(
    context_settings=OVERRIDES,
    epilog="""\b
Examples:
  frameexit train jobs/activitynet_inference_2d.yml --data.path_split split_train.txt \\
      --checkpoint.init backbone.pth --train.beta 1e-3 --out frameexit_beta1e-3.pth
  frameexit train JOB --train.val_path_split split_val.txt --train.epochs_classifier 40 --out head.pth
""",
)
@JOB_ARGUMENT
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Checkpoint file to write.")
@CACHE_OPTION
@click.option("--num-workers", type=click.IntRange(min=0), default=None, help="DataLoader processes for extraction.")
@DEVICE_OPTION
@PROGRESS_OPTION
@VERBOSE_OPTION
@click.pass_context
def train(
    ctx: click.Context,
    job: str,
    out_path: str,
    cache_root: str,
    num_workers: int | None,
    device: str,
    progress: bool | None,
) -> None:
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
    from jobs.config import load_job

    loaded = load_job(job, ctx.args)
    from jobs.extract import ExtractOptions
    from jobs.train import train as run_train

    options = ExtractOptions(cache_root=cache_root, device=device, num_workers=num_workers)
    result = run_train(loaded, out_path, extract_options=options, progress=progress)
    last = {e["stage"]: e for e in result.history}
    click.echo(
        f"FrameExit train: {result.n_videos} videos; final loss classifiers "
        f"{last['classifier']['loss']:.4f}, gates {last['gates']['loss']:.4f}"
    )
    if result.validation:
        click.echo("  validation top-1 after 1..10 frames: " + " ".join(f"{v:.3f}" for v in result.validation["top1"]))
    click.echo(f"  wrote {result.checkpoint}")


_with_job_help(train)


@main.command()
@click.option(
    "--out",
    "out_dir",
    default="demo-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for the demo's data, cache, checkpoints and report.",
)
@click.option("--progress/--no-progress", default=None, help="Force the progress bars on or off.")
@VERBOSE_OPTION
def demo(out_dir: str, progress: bool | None) -> None:
    """The whole method on an embedded synthetic dataset; needs nothing but this package.

    Generates 1,500 short videos in the ActivityNet layout (1,200 training,
    300 validation; 12 classes: a shape in a colour; easy videos show it in
    every frame, hard ones, 30 %, in 4 of the 10 sampled frames), uses a ResNet-18 with a fixed-seed random initialisation (no pretrained
    weights are downloaded), extracts features of both splits, trains FrameExit
    heads for two values of beta, replays a threshold sweep on the validation
    split for each, and writes the report with the accuracy/GFLOPs curve.
    """
    from jobs.demo import demo as run_demo

    result = run_demo(out_dir, progress=progress, say=lambda line: click.echo(line, err=True))
    summary = result.summary
    click.echo(
        f"FrameExit demo: report in {os.path.join(result.run_dir, 'summary.md')} and {os.path.join(result.run_dir, 'curve.png')}"
    )
    for name, top1 in result.ten_frame_top1.items():
        click.echo(f"  {name}: validation top-1 of the 10-frame classifier {top1:.3f}")
    for row in summary["default"]:
        click.echo(
            f"  {row['checkpoint']} at first_threshold={row['first_threshold']:g}, gate_threshold={row['gate_threshold']:g}: "
            f"top-1 {row['top1']:.3f}, {row['mean_frames']:.2f} frames, {row['gflops_measured']:.2f} measured GFLOPs per video"
        )
    click.echo(
        f"  {len(summary['frontier'])} settings on the Pareto frontier of {summary['n_settings']} (see summary.md)"
    )


@main.group(cls=FrameExitGroup)
@VERBOSE_OPTION
def prepare() -> None:
    """From raw videos and annotation files to the official frame folders and split files."""


@prepare.command(
    "frames",
    short_help="Videos to the official frame folders, with FFmpeg's filters.",
    epilog="""\b
Examples:
  frameexit prepare frames videos/activitynet/ \\
      data/activitynet_v1.3/fps1_res350_hq --dataset activitynet --workers 8
  frameexit prepare frames videos/kinetics_val/ \\
      data/minikinetics/fps5_res256_hq --dataset minikinetics
""",
)
@click.argument("videos_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("frames_dir", type=click.Path(file_okay=False))
@click.option(
    "--dataset",
    type=click.Choice(["activitynet", "minikinetics"]),
    required=True,
    help="activitynet: 1 frame/s, both sides >= 350 pixels; minikinetics: 5 frames/s, both sides >= 256 pixels.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Videos decoded at once, one process each (they end with this command, even if it is killed).",
)
@click.option("--prefix", default="img", show_default=True, help="Frame file names: PREFIX_00001.jpeg, ...")
@click.option("--progress/--no-progress", default=None, help="Force the progress bar on or off.")
@VERBOSE_OPTION
def prepare_frames(
    videos_dir: str, frames_dir: str, dataset: str, workers: int, prefix: str, progress: bool | None
) -> None:
    """Decode every video of VIDEOS_DIR into FRAMES_DIR/KEY/PREFIX_00001.jpeg, ...

    KEY is the video's split key, its file name with the extension .mp4
    (v_abc.mkv is written to v_abc.mp4/), as the split files name videos.
    Uses FFmpeg's own filters and JPEG encoder through PyAV, with the official
    parameters: ffmpeg -vf fps=R,scale=S:S:force_original_aspect_ratio=increase
    -q:v 2. Resumable: videos whose folder has frames are skipped, folders that
    a killed run left half written are redone; each folder is renamed into
    place when complete. A video that cannot be decoded does not stop the
    others: the failures are listed at the end, with exit status 1.
    """
    from jobs.prepare import PRESETS, PrepareError, ffmpeg_filter
    from jobs.prepare import prepare_frames as run_frames
    from jobs.progress import progress as bar

    result = run_frames(
        videos_dir,
        frames_dir,
        dataset=dataset,
        workers=workers,
        prefix=prefix,
        progress=lambda it, n: bar(it, desc="prepare frames", total=n, enabled=progress),
    )
    click.echo(
        f"FrameExit prepare frames ({ffmpeg_filter(**PRESETS[dataset])}, -q:v 2): "
        f"{len(result.written)} videos written ({sum(result.written.values())} frames), "
        f"{len(result.already_done)} already done, {len(result.failed)} failed"
    )
    for f in result.failed:
        click.echo(f"  could not decode {f['video']}: {f['reason']}")
    click.echo(f"  frames in {frames_dir}")
    if result.failed:
        raise PrepareError(f"{len(result.failed)} video(s) could not be decoded (listed above)")


@prepare.command("splits", short_help="The validation split file and a class list from annotations.")
@click.argument("annotation", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--dataset",
    type=click.Choice(["activitynet", "minikinetics"]),
    required=True,
    help="ANNOTATION is the ActivityNet-1.3 JSON or the Kinetics CSV.",
)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Split file to write.")
@click.option(
    "--val-list",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Mini-Kinetics: mini_val_videofolder.txt (first column: video ids).",
)
@click.option(
    "--classes",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="A class list to check the split's labels against (e.g. the official one).",
)
@click.option(
    "--classes-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Class list to write: the label names, sorted, one per line (data.path_classid).",
)
@VERBOSE_OPTION
def prepare_splits(
    annotation: str, dataset: str, out_path: str, val_list: str | None, classes: str | None, classes_out: str | None
) -> None:
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
    from frameexit.errors import UsageError
    from jobs.prepare import build_split

    if classes and classes_out:
        raise UsageError("--classes and --classes-out exclude each other: check against a list, or write one")
    split = build_split(annotation, dataset=dataset, val_list=val_list, classes=classes)
    with atomic_write(out_path, "w") as handle:
        handle.write("".join(k + "\n" for k in split.keys))
    click.echo(f"FrameExit prepare splits: {len(split.keys)} videos written to {out_path}")
    if split.missing:
        click.echo(f"  {len(split.missing)} label(s) missing from {classes}: " + "; ".join(split.missing[:20]))
    if classes_out:
        with atomic_write(classes_out, "w") as handle:
            handle.write("".join(name + "\n" for name in split.classes))
        click.echo(f"  {len(split.classes)} classes written to {classes_out} (sorted)")
        if len(split.classes) != 200:
            click.echo("  note: the official job files' model.num_class is 200")


@prepare.command(
    "check", context_settings=OVERRIDES, short_help="Before a long run: is every split video ready to evaluate?"
)
@JOB_ARGUMENT
@click.option(
    "--max-missing",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Split videos without frames allowed (some can no longer be downloaded).",
)
@VERBOSE_OPTION
@click.pass_context
def prepare_check(ctx: click.Context, job: str, max_missing: int) -> None:
    """Before a long run: split videos with frames, missing or empty folders, unknown labels, frame counts.

    Prints a summary, then fails (exit status 1) if more than --max-missing
    split videos have no frames or if a label is not in the class list.
    """
    from jobs.config import load_job
    from jobs.prepare import PrepareError, check

    r = check(load_job(job, ctx.args))
    click.echo(
        f"FrameExit prepare check: {r.with_frames} of {r.n_listed} split videos have frames; "
        f"{len(r.missing)} missing, {len(r.empty)} empty; {len(r.unknown_labels)} label(s) not in the class list"
    )
    if r.frame_counts:
        c = r.frame_counts
        click.echo(
            f"  frames per video: min {c['min']:g}, p10 {c['p10']:g}, median {c['median']:g}, p90 {c['p90']:g}, "
            f"max {c['max']:g}; {c['under_10']:g} videos with fewer than 10 (frames repeat)"
        )
    for key in r.missing[:10]:
        click.echo(f"  missing: {key}" + (f" {r.hints[key]}" if key in r.hints else ""))
    for key in r.empty[:10]:
        click.echo(f"  empty: {key}")
    for label, keys in list(r.unknown_labels.items())[:10]:
        click.echo(f"  unknown label {label!r} ({len(keys)} videos, e.g. {keys[0]})")
    failure = r.failure(max_missing)
    if failure:
        raise PrepareError(failure)


_with_job_help(prepare_check)


if __name__ == "__main__":
    main()
