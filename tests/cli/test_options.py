"""Every command's help, usage errors (exit 2) and input errors (exit 1), the options objects the
commands hand to `jobs`, and the summaries of reports/text.py (issue 11). All cheap: no extraction,
training or demo runs (the stage functions are replaced where a command would start work)."""

import os
import re
from types import SimpleNamespace

import pytest
from helpers import ANET_JOB, ROOT, invoke

from cli import main
from cli_options import OPTIONS
from reports import text

README = os.path.join(ROOT, "README.md")  # a file that exists


def _one_error_line(r, message):
    """An input error: exit 1, a single ``Error:`` line naming the problem, no usage text, no traceback."""
    assert r.exit_code == 1, r.output
    assert r.output.strip().splitlines() == [r.output.strip()], r.output
    assert r.output.startswith("Error: ") and message in r.output and "Traceback" not in r.output


def _usage_error(r, message):
    assert r.exit_code == 2, r.output
    assert "Usage: frameexit" in r.output and message in r.output and "Traceback" not in r.output


# ---------------------------------------------------------------------------------------------- --help

EXAMPLES = {
    "run": "frameexit run jobs/activitynet_inference_2d.yml",
    "train": "frameexit train jobs/activitynet_inference_2d.yml",
    "demo": "frameexit demo --out demo-out",
    "prepare frames": "frameexit prepare frames videos/activitynet/",
    "prepare splits": "frameexit prepare splits data/activitynet/activity_net.v1-3.min.json",
    "prepare check": "frameexit prepare check jobs/activitynet_inference_2d.yml",
}


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_help_says_what_the_command_does_and_shows_examples(command):
    r = invoke(*command.split(), "--help")
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"Usage: frameexit {command} [OPTIONS]")
    assert re.search(r"\n  Examples?:\n", r.output) and EXAMPLES[command] in r.output
    assert "-v, --verbose" in r.output and "-h, --help" in r.output


def test_every_option_is_declared_once():
    """One declaration per option name: the same help, default and checks in every command that takes it."""
    helps = {c: invoke(*c.split(), "--help").output for c in ("extract", "replay", "run", "train", "infer")}
    for option in ("--cache DIRECTORY", "--device TEXT", "--scheduler", "--workers INTEGER RANGE", "--progress"):
        blocks = {c: _option_help(h, option) for c, h in helps.items() if option in h}
        assert len(blocks) >= 2 and len(set(blocks.values())) == 1, blocks
    assert {"--channels-last / --no-channels-last", "--dtype", "--precision"} <= _options_of(helps["replay"])
    # run replays the cache it has just extracted (and compared with the frames)
    assert _options_of(helps["run"]) == _options_of(helps["extract"]) | _options_of(helps["replay"]) - {
        "--features",
        "--verify-frames / --no-verify-frames",
    } | _options_of(invoke("report", "--help").output) | {"--out"}


def _option_help(help_text, option):
    """The help of ``option`` in click's table, its lines joined."""
    lines = help_text.split("\nOptions:\n")[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 10):
            break
        block.append(line)
    return " ".join(" ".join(block).replace(option, "", 1).split())


def _options_of(help_text):
    options = help_text.split("\nOptions:\n")[1].split("\n\n")[0]
    return set(re.findall(r"^  (--[\w-]+(?: / --[\w-]+)?)", options, re.M)) - {"--help", "--verbose"}


# ---------------------------------------------------------------------------------------------- exit 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["infer", ANET_JOB], "Missing option '--out'"),
        (["infer", "--data.path_frame", "x", ANET_JOB, "--out", "o"], "JOB must come first"),
        (["infer", ANET_JOB, "--out", "o", "--device", "gpu"], "'gpu' is not one of auto, cpu, cuda, cuda:N"),
        (["run"], "Missing argument 'JOB'"),
        (["run", ANET_JOB], "Missing option '--out'"),
        (["run", "--data.path_frame", "x", ANET_JOB, "--out", "o"], "JOB must come first"),
        (["run", ANET_JOB, "--out", "o", "--shard-sise", "3"], "No such option '--shard-sise'. Did you mean"),
        (["run", ANET_JOB, "--out", "o", "stray"], "unexpected extra argument (stray)"),
        (["run", ANET_JOB, "--out", "o", "--budget", "nan"], "--budget"),
        (["run", ANET_JOB, "--out", "o", "--device", "gpu"], "'gpu' is not one of auto, cpu, cuda, cuda:N"),
        (["train"], "Missing argument 'JOB'"),
        (["train", ANET_JOB], "Missing option '--out'"),
        (["train", ANET_JOB, "--out", "h.pth", "--shard-size", "8"], "No such option '--shard-size'"),
        (["demo", "--bogus"], "No such option '--bogus'"),
        (["demo", "extra"], "unexpected extra argument (extra)"),
        (["prepare", "frames"], "Missing argument 'VIDEOS_DIR'"),
        (["prepare", "frames", ROOT, "frames"], "Missing option '--dataset'"),
        (["prepare", "frames", ROOT, "frames", "--dataset", "ucf101"], "'ucf101' is not one of"),
        (["prepare", "splits", README, "--dataset", "activitynet"], "Missing option '--out'"),
        (
            [
                "prepare",
                "splits",
                README,
                "--dataset",
                "activitynet",
                "--out",
                "s.txt",
                "--classes",
                README,
                "--classes-out",
                "c.txt",
            ],
            "--classes and --classes-out",
        ),
        (["prepare", "check"], "Missing argument 'JOB'"),
        (["prepare", "check", ANET_JOB, "--max-missing", "-1"], "--max-missing"),
        (["prepare", "check", ANET_JOB, "--max-mising", "3"], "Did you mean '--max-missing'"),
    ],
)
def test_usage_errors_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _usage_error(invoke(*args), message)
    assert os.listdir(tmp_path) == []  # found before any work


@pytest.mark.parametrize("command", ["extract", "replay", "run"])
@pytest.mark.parametrize("scheduler", ["tcp://127.0.0.1:1", "threads", "sync"])
def test_scheduler_with_workers_is_exit_2_whichever_comes_first(command, scheduler, tmp_path):
    out = [] if command == "extract" else ["--out", tmp_path / "o"]
    for order in (["--scheduler", scheduler, "--workers", "2"], ["--workers", "2", "--scheduler", scheduler]):
        # a missing job file (exit 1) is not even read: the usage error comes first
        _usage_error(invoke(command, tmp_path / "missing.yml", *out, *order), "either --scheduler or --workers")


# ---------------------------------------------------------------------------------------------- exit 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["infer", "missing.yml", "--out", "o"], "job file not found: missing.yml"),
        (["run", "missing.yml", "--out", "o"], "job file not found: missing.yml"),
        (["train", "missing.yml", "--out", "head.pth"], "job file not found: missing.yml"),
        (["prepare", "check", "missing.yml"], "job file not found: missing.yml"),
        (["prepare", "frames", "no-videos", "frames", "--dataset", "activitynet"], "VIDEOS_DIR directory not found"),
        (["prepare", "splits", "missing.json", "--dataset", "activitynet", "--out", "s"], "ANNOTATION file not found"),
        (
            ["prepare", "splits", "README.md", "--dataset", "minikinetics", "--out", "s", "--val-list", "no.txt"],
            "--val-list file not found: no.txt",
        ),
        (["report", "--out", "no-run"], "--out directory not found: no-run"),
        (["run", ANET_JOB, "--out", "o", "--model.first_treshold", "0.9"], "did you mean model.first_threshold?"),
        (["run", ANET_JOB, "--out", "o", "--data", "x"], "override --data names a section"),
    ],
)
def test_input_errors_exit_1_with_one_error_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("not an annotation file")
    _one_error_line(invoke(*args), message)
    assert sorted(os.listdir(tmp_path)) == ["README.md"]


def test_prepare_check_of_a_split_without_frames_exits_1(tmp_path):
    (tmp_path / "split.txt").write_text("v_a.mp4\n")
    r = invoke("prepare", "check", ANET_JOB, "--data.path_split", tmp_path / "split.txt")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.splitlines()[-1].startswith("Error: ")


# ---------------------------------------------------------------------------------------------- options objects


@pytest.fixture
def captured(monkeypatch):
    """Replaces the stage functions: a command's call is recorded instead of run."""
    import jobs.extract
    import jobs.replay
    import jobs.run
    import jobs.train

    calls = {}

    def record(name):
        def stage(*args, **kwargs):
            calls[name] = (args, kwargs)
            raise KeyboardInterrupt  # stop there, as Ctrl-C would: exit 130, nothing printed to parse

        return stage

    for module, name in ((jobs.extract, "extract"), (jobs.replay, "replay"), (jobs.run, "run"), (jobs.train, "train")):
        monkeypatch.setattr(module, name, record(name))
    return calls


def test_run_builds_the_stage_options_from_one_set_of_options(captured, tmp_path):
    from jobs.extract import ExtractOptions
    from jobs.replay import ReplayOptions
    from jobs.report import ReportOptions

    r = invoke(
        "run",
        ANET_JOB,
        "--out",
        tmp_path / "o",
        "--cache",
        tmp_path / "c",
        "--shard-size",
        "16",
        "--dtype",
        "float16",
        "--channels-last",
        "--workers",
        "3",
        "--gate-thresholds",
        "0:1:3",
        "--per-video",
        "all",
        "--budget",
        "5",
        "--metric",
        "top1",
        "--device",
        "cpu",
    )
    assert r.exit_code == 130, r.output
    (job, _), kwargs = captured["run"]
    cache = str(tmp_path / "c")
    assert kwargs["extract_options"] == ExtractOptions(cache_root=cache, shard_size=16, device="cpu", workers=3)
    assert kwargs["replay_options"] == ReplayOptions(cache_root=cache, workers=3)
    assert kwargs["report_options"] == ReportOptions(budget=5.0, metric="top1")
    # what is computed is the job's: the options that stand for job keys are set there
    assert (job.extract.dtype, job.extract.channels_last) == ("float16", True)
    assert (job.replay.gate_thresholds, job.replay.per_video) == ((0.0, 0.5, 1.0), "all")


def test_extract_replay_and_train_get_the_same_options_objects(captured, tmp_path):
    from jobs.extract import ExtractOptions
    from jobs.replay import ReplayOptions

    cache = str(tmp_path / "c")
    r = invoke("extract", ANET_JOB, "--cache", cache, "--precision", "bf16", "--scheduler", "sync")
    assert r.exit_code == 130, r.output
    # dask's local schedulers mean: extract in this process (jobs.scheduling.LOCAL_SCHEDULERS)
    assert captured["extract"][0][1] == ExtractOptions(cache_root=cache, scheduler="sync")
    assert captured["extract"][0][0].extract.precision == "bf16"
    r = invoke(
        "replay", ANET_JOB, "--cache", cache, "--out", tmp_path / "o", "--channels-last", "--order", "sequential"
    )
    assert r.exit_code == 130, r.output
    assert captured["replay"][0][2] == ReplayOptions(cache_root=cache)
    assert captured["replay"][0][0].extract.channels_last and captured["replay"][0][0].model.input_order == tuple(
        range(10)
    )
    r = invoke("train", ANET_JOB, "--cache", cache, "--out", tmp_path / "h.pth", "--num-workers", "0")
    assert r.exit_code == 130, r.output
    assert captured["train"][1]["extract_options"] == ExtractOptions(cache_root=cache)
    assert captured["train"][0][0].data.num_workers == 0


def test_the_options_of_every_command_come_from_one_table():
    import click

    declared = {}
    for name, decorator in OPTIONS.items():
        option = decorator(lambda: None).__click_params__[0]
        declared[name] = option

    def walk(group, prefix=()):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from walk(command, (*prefix, name))
            else:
                yield (*prefix, name), command

    for path, command in walk(main):
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help", "out_dir", "out_path"):
                twin = declared[param.name]
                assert (param.opts, param.help, param.default) == (twin.opts, twin.help, twin.default), path


# ---------------------------------------------------------------------------------------------- summaries


def test_train_summary():
    result = SimpleNamespace(
        n_videos=12,
        history=[
            {"stage": "classifier", "loss": 2.0},
            {"stage": "classifier", "loss": 1.23456},
            {"stage": "gates", "loss": 0.5},
        ],
        validation={"top1": [0.5, 0.75]},
        checkpoint="head.pth",
        loss="bce",
    )
    assert text.render_train_summary(result) == (
        "FrameExit train: 12 videos; final loss (bce) classifiers 1.2346, gates 0.5000\n"
        "  validation top-1 after 1..10 frames: 0.500 0.750\n"
        "  wrote head.pth"
    )
    assert "validation" not in text.render_train_summary(SimpleNamespace(**{**vars(result), "validation": None}))


def test_demo_summary():
    row = {"checkpoint": "b.pth", "first_threshold": 0.95, "gate_threshold": 0.5, "top1": 0.9, "mean_frames": 2.5}
    result = SimpleNamespace(
        run_dir="d/run",
        ten_frame_top1={"b.pth": 0.99},
        summary={"default": [dict(row, gflops_measured=1.234)], "frontier": [1, 2], "n_settings": 10},
    )
    assert text.render_demo_summary(result).splitlines() == [
        f"FrameExit demo: report in {os.path.join('d/run', 'summary.md')} and {os.path.join('d/run', 'curve.png')}",
        "  b.pth: validation top-1 of the 10-frame classifier 0.990",
        "  b.pth at first_threshold=0.95, gate_threshold=0.5: top-1 0.900, 2.50 frames, 1.23 measured GFLOPs per video",
        "  2 settings on the Pareto frontier of 10 (see summary.md)",
    ]


def test_prepare_summaries():
    ffmpeg = SimpleNamespace(version="n9.0.2", source="PATH", path="/usr/bin/ffmpeg")
    frames = SimpleNamespace(
        written={"a.mp4": 3, "b.mp4": 4},
        already_done=["c.mp4"],
        failed=[],
        too_short=[],
        ffmpeg=None,
        manifest=None,
        predating=0,
    )
    failed = [{"video": "x.mkv", "reason": "invalid data"}]
    short = [{"video": "s.mp4", "reason": "shorter than one frame at 1 fps (0.40 s)"}]
    result = SimpleNamespace(
        **{**vars(frames), "failed": failed, "too_short": short, "ffmpeg": ffmpeg, "manifest": "out/m.json"}
    )
    assert text.render_frames_summary(result, ffmpeg_filter="fps=1", frames_dir="out").splitlines() == [
        "FrameExit prepare frames (fps=1, -q:v 2): 2 videos written (7 frames), 1 already done, 1 too short, 1 failed",
        "  no frames from s.mp4: shorter than one frame at 1 fps (0.40 s)",
        "  failed x.mkv: invalid data",
        "  ffmpeg n9.0.2 (PATH): /usr/bin/ffmpeg",
        "  frames in out (command and FFmpeg version in out/m.json)",
    ]
    lines = text.render_frames_summary(
        SimpleNamespace(**{**vars(frames), "predating": 2}), ffmpeg_filter="", frames_dir=""
    )
    assert lines.splitlines()[1].startswith("  note: 2 frame folder(s) were made before prepare frames recorded")
    assert text.render_frames_summary(frames, ffmpeg_filter="fps=1", frames_dir="out").splitlines()[1:] == [
        "  frames in out"
    ]
    split = SimpleNamespace(keys=["v_a.mp4"], missing=["Zumba"], classes=["a", "b"], num_class=200)
    assert text.render_splits_summary(split, out_path="s.txt", classes="c.txt", classes_out=None).splitlines() == [
        "FrameExit prepare splits: 1 videos written to s.txt",
        "  1 label(s) missing from c.txt: Zumba",
    ]
    split = SimpleNamespace(keys=["v_a.mp4"], missing=[], classes=["a", "b"], num_class=3142)
    lines = text.render_splits_summary(split, out_path="s.txt", classes=None, classes_out="k.txt").splitlines()
    assert lines[1:] == [
        "  2 classes written to k.txt (sorted)",
        "  note: the bundled job file's model.num_class is 3142",
    ]
    check = SimpleNamespace(
        n_listed=3,
        with_frames=1,
        missing=["v_x.mp4"],
        empty=["v_e.mp4"],
        unknown_labels={"Zumba": ["v_a.mp4"]},
        frame_counts={"min": 1, "p10": 1, "median": 5, "p90": 9, "max": 9, "under_10": 1},
        hints={"v_x.mp4": "(found v_x.mkv)"},
        unlabelled=[],
    )
    assert text.render_check_summary(check).splitlines() == [
        "FrameExit prepare check: 1 of 3 split videos have frames; 1 missing, 1 empty; 1 label(s) not in the class list",
        "  frames per video: min 1, p10 1, median 5, p90 9, max 9; 1 videos with fewer than 10 (frames repeat)",
        "  missing: v_x.mp4 (found v_x.mkv)",
        "  empty: v_e.mp4",
        "  unknown label 'Zumba' (1 videos, e.g. v_a.mp4)",
    ]


def test_report_and_run_summaries():
    paths = {"summary.md": "o/summary.md", "summary.json": "o/summary.json", "curve.png": "o/curve.png"}
    result = SimpleNamespace(summary={"n_settings": 4, "frontier": [1]}, paths=paths)
    where = "  report: o/summary.md\n          o/summary.json\n          o/curve.png"
    assert text.render_report_summary(result) == "FrameExit report: 4 settings, 1 on the frontier\n" + where
    assert text.render_run_summary("o", result) == "FrameExit run: artefacts in o\n" + where
    # with intervals and exit policies: the job's setting with its interval, each policy's points
    row = {"checkpoint": "a.pth", "policy": "frameexit", "first_threshold": 0.9, "gate_threshold": 0.5, "tau": None}
    row |= {"frames": None, "map": 0.5, "top1": 0.8, "gflops": 4.0, "map_interval": [0.4, 0.6]}
    row |= {"top1_interval": [0.7, 0.9]}
    fixed = {**row, "policy": "fixed", "first_threshold": None, "gate_threshold": None, "frames": 3, "top1": 0.75}
    fixed.pop("top1_interval")
    points = [
        {"policy": "frameexit", "at_job_cost": row, "within_one_point": None},
        {"policy": "fixed", "at_job_cost": fixed, "within_one_point": fixed},
    ]
    summary = {
        "n_settings": 4,
        "frontier": [1],
        "accuracy_metric": "top1",
        "cost_metric": "gflops",
        "default": [row],
        "bootstrap": {"level": 0.95, "resamples": 1000},
        "policies": [{"checkpoint": "a.pth", "full_t": 0.76, "points": points}],
    }
    lines = text.render_run_summary("o", SimpleNamespace(summary=summary, paths=paths)).splitlines()
    assert lines[:5] == [
        "FrameExit run: artefacts in o",
        "  a.pth at the job's setting: mAP 0.500 [0.400, 0.600], top-1 0.800 [0.700, 0.900] (95 % bootstrap "
        "intervals, 1000 resamples)",
        "  a.pth: top-1 by exit policy (at the job's cost | cheapest within 1 point of 0.760, every frame; GFLOPs "
        "per video):",
        "    frameexit  first 0.9, gate 0.5: 0.800 [0.700, 0.900] at 4.00 | none",
        "    fixed      3 frames: 0.750 at 4.00 | 3 frames: 0.750 at 4.00",
    ]
    regressions = {"baseline": {"regressions": ["a.pth: mAP 0.7 < 0.8", "b.pth: missing"]}}
    assert text.render_regressions(regressions) == "REGRESSION: a.pth: mAP 0.7 < 0.8\nREGRESSION: b.pth: missing"
