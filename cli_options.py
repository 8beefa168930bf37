"""The command line's plumbing: every option declared once (:data:`OPTIONS`, :func:`options`), their checks,
JOB parsing (:func:`job_command`), one exit status per outcome (:class:`FrameExitGroup`). Only click is
imported here: ``frameexit --help`` stays instant.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import math
import os
import signal
import sys

import click

from frameexit.errors import FrameExitError, UsageError, disk_full_error

#: Exit status of every command (the README's "Exit status" section says the same).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_GATE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and temporary-file clean-up run."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


class _ReaderGone:
    """``sys.stdout`` or ``sys.stderr`` that outlives its reader (``frameexit run ... | head -1``): the first write
    or flush that meets a closed pipe points the descriptor at /dev/null (and sets ``gone``) instead of raising
    BrokenPipeError, which would stop the command between two stages with its outputs half written."""

    def __init__(self, stream):
        self._stream = stream
        self.gone = False

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        self.gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no descriptor (a test's stream): nothing more to write to
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _outlive_readers() -> _ReaderGone:
    """Make ``sys.stdout`` and ``sys.stderr`` outlive their readers (:class:`_ReaderGone`) once; the new stdout."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is not None and not isinstance(getattr(sys, name), _ReaderGone):
            setattr(sys, name, _ReaderGone(getattr(sys, name)))
    return sys.stdout  # type: ignore[return-value]


class PathNotFoundError(FrameExitError, FileNotFoundError):
    """A file or directory named on the command line does not exist (exit 1, as a missing job file)."""


def _one_line(message: str) -> str:
    """``message`` on one line: a line break that came from an input (a file or checkpoint name, a value read
    from a document) is shown escaped, so the error stays the one line the exit-status contract promises."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


class FrameExitGroup(click.Group):
    """Maps every outcome to one exit status: a :class:`FrameExitError` is one ``Error:`` line and 1, a
    :class:`UsageError` 2 (as click's own usage errors), a full disk met anywhere 1 (:func:`disk_full_error`),
    Ctrl-C 130, SIGTERM 143, never a traceback."""

    def invoke(self, ctx: click.Context):
        if ctx.parent is None:
            signal.signal(signal.SIGTERM, _on_sigterm)
            stdout = _outlive_readers()
            # a closed stdout stops nothing: the command runs to its end, then says so (stderr may be open)
            ctx.call_on_close(lambda: _say_if_cut(stdout))
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise click.UsageError(_one_line(str(exc))) from None
        except FrameExitError as exc:
            raise click.ClickException(_one_line(str(exc))) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            # a full disk (or quota, or file size limit) met by any writer: one line naming the file, not a bug
            full = disk_full_error(exc)
            if full is None:
                raise
            raise click.ClickException(_one_line(str(full))) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted: no output of this command was completed beyond what it reported.", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except _Terminated:
            click.echo(
                "\nTerminated (SIGTERM): no output of this command was completed beyond what it reported.", err=True
            )
            raise click.exceptions.Exit(EXIT_TERMINATED) from None


def _say_if_cut(stdout: _ReaderGone | None) -> None:
    if getattr(stdout, "gone", False):
        click.echo(
            "Note: standard output was closed before the summary was printed in full (broken pipe); the command "
            "carried on to its end, and its exit status says how it ended.",
            err=True,
        )


class ExistingPath(click.Path):
    """A path that must exist: a missing one is an error in the inputs (exit 1), as a missing job file is."""

    def __init__(self, **kwargs):
        super().__init__(exists=True, **kwargs)

    def convert(self, value, param, ctx):
        if not os.path.exists(value):
            name = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
            raise PathNotFoundError(f"{name} {'file' if self.file_okay else 'directory'} not found: {value}")
        return super().convert(value, param, ctx)


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


#: The exit policies of ``infer --policy`` (frameexit.policies.POLICIES, which imports numpy: not imported here).
EXIT_POLICIES = ("frameexit", "confidence", "fixed", "oracle")
SCHEDULER_OR_WORKERS = "give either --scheduler or --workers, not both"
CLASSES_EXCLUSIVE = "--classes and --classes-out exclude each other: check against a list, or write one"

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
        help="Use this cache directory instead of CACHE/<key> (the key computed from the job); every input its "
        "manifest records must still equal the job's.")
_option("--verify-frames/--no-verify-frames", default=False,
        help="Read the frame files the steps use and refuse a cache extracted from other frames (another listing "
        "or other bytes, e.g. re-prepared under the same split file); without it, the frames are not read.")
_option("--exit-tables", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
        help="auto: read each checkpoint's exit tables (its head's outputs over the features) where the cache keeps "
        "them (CACHE/<key>/exit-tables/), else run its head and keep them there for the next replay; off: run every "
        "head, and read or keep nothing.")
_option("--head-device", default="auto", callback=_device,
        help="Where the checkpoints' heads run over the cached features: auto (CUDA when available, as infer's "
        "--device), cpu, cuda or cuda:N. float64 either way; a GPU's kernels may round the last bits otherwise than "
        "a CPU's, so its exit tables are kept apart in the cache and replay.json names the device.")
_option("--shard-size", type=click.IntRange(min=1), default=64, help="Videos per shard.")
_option("--batch-videos", type=click.IntRange(min=1), default=8, help="Videos per backbone batch (x 10 frames).")
# the options that stand for a job key (jobs.config.OPTION_KEYS) have no default of their own: the job's is theirs
_option("--num-workers", type=click.IntRange(min=0),
        help="DataLoader processes decoding JPEGs: sets data.num_workers [default: data.num_workers of the job].")
_option("--dtype", type=click.Choice(["float32", "float16"]),
        help="Storage type of the features (part of the cache key): sets extract.dtype "
        "[default: extract.dtype of the job, else float32].")
_option("--precision", type=click.Choice(["fp32", "tf32", "bf16", "fp16"]),
        help="Backbone arithmetic: exact fp32, TF32 matmuls, or bf16/fp16 autocast (changes the numbers and the key): "
        "sets extract.precision [default: extract.precision of the job, else fp32].")
_option("--channels-last/--no-channels-last", default=None,
        help="Channels-last memory format of the backbone: other convolution kernels, features that differ in "
        "the last bits, so part of the cache key (give replay the same option, or set it in the job): sets "
        "extract.channels_last [default: extract.channels_last of the job, else off].")
_option("--batching", type=click.Choice(["auto", "batched", "per-step"]),
        help="Backbone forward passes: batched (the last bits may differ from frameexit infer's, measured on probe "
        "videos and reported) or per-step (one step per pass as infer runs it: equal to it bit for bit). auto: "
        "batched on CUDA, per-step on a CPU; replay: a cache of either (per-step preferred). Part of the cache key: "
        "sets extract.batching [default: extract.batching of the job, else auto].")
_option("--probe-videos", type=click.IntRange(min=0), default=2,
        help="Videos per shard whose steps also run one per forward pass, to measure how far batched features "
        "are from infer's (0: none; replay then cannot tell which videos may disagree).")
_option("--device", default="auto", callback=_device, help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N.")
_option("--policy", type=click.Choice(EXIT_POLICIES), default="frameexit",
        help="Exit policy: frameexit (the gates, at model.first_threshold and model.gate_threshold), confidence "
        "(--tau), fixed (--frames) or oracle.")
_option("--tau", type=click.FloatRange(0, 1), callback=_finite, metavar="PROB",
        help="--policy confidence: exit at the first step whose top probability is > PROB "
        "[default: model.first_threshold].")
_option("--frames", type=click.IntRange(min=1), metavar="K",
        help="--policy fixed: every video reads K frames, 1..T [default: T, the frames of the policy order].")
_option("--first-thresholds", callback=_grid, metavar="LIST|START:STOP:COUNT",
        help="first_threshold values, e.g. 0.9,0.95,0.99 or 0.5:1:11 (ends included): sets replay.first_thresholds "
        "[default: replay.first_thresholds of the job, else model.first_threshold].")
_option("--gate-thresholds", callback=_grid, metavar="LIST|START:STOP:COUNT",
        help="gate_threshold values, e.g. 0.1:0.9:33: sets replay.gate_thresholds "
        "[default: replay.gate_thresholds, else model.gate_threshold].")
_option("--order", type=click.Choice(["coarse_to_fine", "sequential"]),
        help="Policy order of the frames: sets model.adaptive.input_order [default: model.adaptive.input_order "
        "of the job].")
_option("--per-video", type=click.Choice(["default", "all"]),
        help="Per-video rows for the job's default setting only, or for every setting: sets replay.per_video "
        "[default: replay.per_video of the job, else default].")
_option("--policies", metavar="LIST",
        help="Exit policies replayed beside frameexit's gates, e.g. confidence,fixed,oracle or frameexit (the gates "
        "alone): sets replay.policies [default: all four]. confidence exits at the first step whose top probability "
        "exceeds tau; fixed reads k frames (k = 1..T); oracle exits at the first step whose top class is right.")
_option("--confidence-thresholds", callback=_grid, metavar="LIST|START:STOP:COUNT",
        help="The confidence policy's tau values: sets replay.confidence_thresholds [default: the first_threshold grid].")
_option("--resamples", type=click.IntRange(min=0), metavar="N",
        help="Bootstrap resamples over videos of the intervals at the settings a report names: sets "
        "replay.bootstrap_resamples [default: 1000; 0: no intervals].")
_option("--level", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True), metavar="FRACTION",
        help="Level of the bootstrap's percentile intervals: sets replay.bootstrap_level [default: 0.95].")
_option("--seed", type=int, help="Seed of the bootstrap's resamples: sets replay.bootstrap_seed [default: 0].")
_option("--scheduler", default="threads", metavar="threads|sync|cuda|ADDRESS",
        callback=_not_with("workers", SCHEDULER_OR_WORKERS),
        help="Where the dask tasks run: threads or sync, dask's local threaded or synchronous scheduler "
        "(extraction: on this machine), cuda (extraction: dask-cuda's LocalCUDACluster, one worker per GPU, even "
        "one; pip install '.[gpu]'), or a dask.distributed scheduler address (tcp://HOST:PORT).")
_option("--workers", type=click.IntRange(min=1), callback=_not_with("scheduler", SCHEDULER_OR_WORKERS),
        help="Run the tasks on a local dask cluster of N processes.")
_option("--budget", type=click.FloatRange(min=0), callback=_finite, metavar="GFLOPS",
        help="Report the most accurate setting costing at most GFLOPS per video (replay: compute the bootstrap "
        "intervals and per-video rows of the setting a report would choose at this budget).")
_option("--calibrate-on", type=ExistingPath(file_okay=False), metavar="RUN_DIR",
        help="Choose the budget setting on another run's sweep (e.g. a held-out split), evaluate it here. It "
        "must be of the same dataset, class list, checkpoints and policy order, over other videos.")
# not checked here: a report killed while replacing its files leaves no summary.json until a reader finishes it
_option("--baseline", type=click.Path(dir_okay=False), metavar="SUMMARY_JSON",
        help="Compare the job's setting with an earlier summary.json of the same dataset, split, labels, class "
        "list, checkpoints (by SHA-256) and metrics; every checkpoint in it must be in this run, and the gate "
        "fails when the two evaluated other videos (see --accept-missing).")
_option("--max-drop", type=click.FloatRange(min=0), callback=_finite,
        help="Largest accepted drop of mAP or top-1 (fraction, e.g. 0.005) against the baseline.")
_option("--max-cost-rise", type=click.FloatRange(min=0), callback=_finite,
        help="Largest accepted rise of GFLOPs per video against the baseline.")
_option("--significance", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True), metavar="LEVEL",
        help="Fail on --max-drop only when the drop is significant: when the paired bootstrap's LEVEL interval "
        "(e.g. 0.95) of the drop against the baseline lies wholly above --max-drop [default: the point estimate "
        "decides].")
_option("--accept-missing", type=click.IntRange(min=0), metavar="N",
        help="Accept up to N videos evaluated by only one of this run and the baseline (e.g. ActivityNet videos "
        "that can no longer be downloaded) [default: 0]. Top-1 and cost are then compared over the videos both "
        "evaluated; mAP is not compared (it needs every class's score of each video), as summary.md says.")
_option("--metric", type=click.Choice(["map", "top1"]),
        help="Accuracy for the frontier, budget and curve [default: map for ActivityNet, top1 for Mini-Kinetics].")
_option("--dataset", type=click.Choice(["activitynet", "minikinetics", "hvu"]), required=True,
        help="activitynet: ActivityNet-1.3 (JSON annotations; frames at 1 frame/s, both sides >= 350 pixels); "
        "minikinetics: Mini-Kinetics (Kinetics CSV; 5 frames/s, both sides >= 256 pixels); hvu: HVU v1.0 "
        "(tags CSV; Kinetics clips, framed as Mini-Kinetics).")
_option("--workers", "decoders", type=click.IntRange(min=1), default=1,
        help="Videos decoded at once, one process each (they end with this command, even if it is killed).")
_option("--prefix", default="img", help="Frame file names: PREFIX_00001.jpeg, ...")
_option("--ffmpeg", type=ExistingPath(dir_okay=False),
        help="The ffmpeg executable to run [default: ffmpeg on PATH, else the static one installed with frameexit].")
_option("--val-list", type=ExistingPath(dir_okay=False),
        help="Mini-Kinetics: mini_val_videofolder.txt (first column: video ids).")
_option("--categories", type=ExistingPath(dir_okay=False),
        help="HVU: the Tag,Category CSV; --classes-out then lists all of its tags (the class list of HVU).")
_option("--key-format", metavar="FORMAT",
        help="HVU: the video keys, a Python format of youtube_id, time_start and time_end (integers) "
        "[default: the Kinetics style, e.g. abc_000005_000015.mp4].")
_option("--classes", type=ExistingPath(dir_okay=False), callback=_not_with("classes_out", CLASSES_EXCLUSIVE),
        help="A class list to check the split's labels against (e.g. the official one).")
_option("--classes-out", type=click.Path(dir_okay=False), callback=_not_with("classes", CLASSES_EXCLUSIVE),
        help="Class list to write: the label names, sorted, one per line (data.path_classid).")
_option("--max-missing", type=click.IntRange(min=0), default=0,
        help="Split videos without frames or a label entry allowed (some can no longer be downloaded).")
_option("--progress/--no-progress", help="Force the progress bars on or off (default: only on a terminal).")
_option("-v", "--verbose", count=True, expose_value=False, is_eager=True, callback=_set_verbosity,
        help="More log messages on stderr (-vv for debug); also accepted before the command.")
# fmt: on

JOB_ARGUMENT = click.argument("job", metavar="JOB", callback=_job_first)

#: The options each `jobs` options object is built from (a command gets a plain option or an object's): how a
#: stage runs.
EXTRACT = ("cache_root", "shard_size", "batch_videos", "probe_videos", "device", "scheduler", "workers")
REPLAY = ("cache_root", "features", "verify_frames", "exit_tables", "head_device", "scheduler", "workers", "budget")
# run replays the cache it has just extracted (and verified), and names the budget its report is given
RUN_REPLAY = tuple(n for n in REPLAY if n not in ("features", "verify_frames", "budget"))
#: The options that stand for job keys (what a stage computes; jobs.config.OPTION_KEYS maps them to their keys).
FEATURES = ("dtype", "precision", "channels_last", "batching")  # extract.*: the extraction settings in the cache key
EXTRACT_KEYS = ("num_workers", *FEATURES)
BOOTSTRAP_KEYS = ("policies", "confidence_thresholds", "resamples", "level", "seed")
REPLAY_KEYS = ("first_thresholds", "gate_thresholds", "order", "per_video", *BOOTSTRAP_KEYS, *FEATURES)
REPORT = ("budget", "calibrate_on", "baseline", "max_drop", "max_cost_rise", "significance", "accept_missing", "metric")


def _build(keyword: str, values: dict):
    """The `jobs` options object handed to a command as ``keyword``, from the parsed values of its options."""
    # only the command's own stages: jobs.extract imports torch and jobs.replay dask, which `report` does not need
    stage = keyword.removesuffix("_options")
    kind = {"extract": "ExtractOptions", "replay": "ReplayOptions", "report": "ReportOptions"}[stage]
    return getattr(importlib.import_module(f"jobs.{stage}"), kind)(**values)


def options(*plain: str, job_keys: tuple[str, ...] = (), **objects: tuple[str, ...]):
    """Adds the options named in ``plain``, ``job_keys`` and ``objects`` (keyword -> option names), each once in the
    order of :data:`OPTIONS`; the command gets the ``plain`` values, one :func:`_build` object per keyword of
    ``objects``, and its ``job`` with the ``job_keys`` given set (:func:`jobs.config.with_options`)."""
    grouped = {n for group in objects.values() for n in group}
    job_keys = tuple(dict.fromkeys(job_keys))  # each once: run takes extract's and replay's
    names = sorted(grouped.union(plain, job_keys), key=list(OPTIONS).index)

    def decorate(f):
        @functools.wraps(f)
        def command(*args, **kwargs):
            values = {name: kwargs.pop(name) for name in grouped}
            built = {k: _build(k, {n: values[n] for n in group}) for k, group in objects.items()}
            if job_keys:
                from jobs.config import with_options

                kwargs["job"] = with_options(kwargs["job"], {name: kwargs.pop(name) for name in job_keys})
            return f(*args, **built, **kwargs)

        for name in reversed(names):
            command = OPTIONS[name](command)
        return command

    return decorate


def out_option(help: str, *, directory: bool = True, exists: bool = False, **attrs):
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


def job_command(group: click.Group, *args, **kwargs):
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


def echo_report(text: str, result) -> None:
    """A report's summary, then its regressions on stderr and exit status 3 when the baseline gate fails."""
    from reports.text import render_regressions

    click.echo(text)
    if result.regressed:
        click.echo(render_regressions(result.summary), err=True)
        raise SystemExit(EXIT_GATE)
