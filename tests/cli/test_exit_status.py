"""Right or loud (issue 10): exit statuses, errors before work, empty splits, unreadable frames
after the exit point, numbers in scientific notation, file modes, help texts."""

import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from helpers import EXE, ROOT, copy_cache, invoke, job_setting_rows, write_job

UNWRITABLE = "/proc/frameexit-test/out"  # not creatable even as root, unlike a chmod 0o555 directory


def _copy_fixture(anet, root):
    """A private copy of the ActivityNet fixture (tests below damage frames or splits)."""
    root = str(root)
    shutil.copytree(os.path.dirname(anet["frames"]), root, dirs_exist_ok=True)
    return {k: os.path.join(root, os.path.relpath(v, os.path.dirname(anet["frames"]))) for k, v in anet.items()}


def _forbid(monkeypatch, module, name):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{module.__name__}.{name} ran although the options were invalid")

    monkeypatch.setattr(module, name, refuse)


# ---------------------------------------------------------------------------------------------- exit status


def test_sigterm_exits_143_with_a_message(tmp_path):
    marker = tmp_path / "started"
    code = (
        "import pathlib, sys, time\n"
        "import jobs.config, cli\n"
        "def slow(*a, **k):\n"
        f"    pathlib.Path({str(marker)!r}).write_text('1')\n"
        "    time.sleep(60)\n"
        "jobs.config.load_job = slow\n"
        "sys.argv = ['frameexit', 'infer', 'job.yml', '--out', 'o']\n"
        "cli.main()\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 143, err
    assert "Terminated" in err and "Traceback" not in err


def test_verbose_flag_after_the_command(anet, tmp_path):
    job = write_job(str(tmp_path / "job.yml"), anet, "")
    r = invoke("infer", job, "-v", "--out", tmp_path / "o")
    # -v is taken as the option it is documented to be, not as a job override
    assert "unexpected argument '-v'" not in r.output
    assert r.exit_code == 1 and "needs checkpoint.init" in r.output


def test_typo_in_a_job_is_reported_before_torch_is_imported(anet, tmp_path):
    job = write_job(str(tmp_path / "job.yml"), anet, "x.pth")
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "import cli\n"
        f"r = CliRunner().invoke(cli.main, ['infer', {job!r}, '--data.path_fram', 'x', '--out', 'o'])\n"
        "print(r.exit_code, 'torch' in sys.modules, r.output.strip())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("1 False Error: override: unknown key data.path_fram"), out.stdout + out.stderr


def _help_texts():
    commands = [[], ["infer"], ["extract"], ["replay"], ["report"], ["run"], ["train"], ["demo"], ["prepare"]]
    commands += [["prepare", c] for c in ("frames", "splits", "check")]
    return {" ".join(c) or "frameexit": invoke(*c, "--help").output for c in commands}


def test_help_texts_have_no_whitespace_gaps():
    for name, text in _help_texts().items():
        description = text.split("\nOptions:")[0]
        gaps = [line for line in description.splitlines() if re.search(r"\S {2,}\S", line)]
        assert not gaps, f"frameexit {name} --help: {gaps}"
        assert "-v, --verbose" in text, name


def test_demo_help_states_the_demo_that_runs():
    from jobs import demo

    params = inspect.signature(demo.make_dataset).parameters
    n_train, n_val = params["n_train"].default, params["n_val"].default
    text = " ".join(invoke("demo", "--help").output.split())
    assert f"Generates {n_train + n_val:,} short videos" in text
    assert f"{n_train:,} training, {n_val:,} validation" in text
    assert f"{round(100 * demo.HARD_SHARE)} %, in {demo.HARD_SHOWN} of the 10 sampled frames" in text


def test_exit_statuses_are_documented_in_one_place():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Exit status", 1)[1].split("\n## ", 1)[0]
    for code in ("0", "1", "2", "3", "130", "143"):
        assert f"| {code} |" in section


# ---------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "override, key, value",
    [
        (["--train.beta", "1e-3"], "beta", 1e-3),
        (["--train.lr=1e-4"], "lr", 1e-4),
        (["--train.lr_gates", "2E-5"], "lr_gates", 2e-5),
        (["--model.first_threshold=1e-3"], "first_threshold", 1e-3),
    ],
)
def test_scientific_notation_in_overrides(anet, tmp_path, override, key, value):
    from jobs.config import load_job

    job = load_job(write_job(str(tmp_path / "job.yml"), anet, "x.pth"), override)
    got = job.model.first_threshold if key == "first_threshold" else getattr(job.train.config, key)
    assert got == value


def test_scientific_notation_in_a_job_file(anet, tmp_path):
    from jobs.config import load_job

    path = write_job(str(tmp_path / "job.yml"), anet, "x.pth")
    with open(path, "a") as f:
        f.write("train:\n  beta: 1e-3\n  lr: 5E-4\n")
    job = load_job(path)
    assert job.train.config.beta == 1e-3 and job.train.config.lr == 5e-4


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e-3x", "abc"])
def test_numbers_that_are_not_finite_or_not_numbers_are_refused(anet, tmp_path, text):
    from frameexit.errors import ConfigError
    from jobs.config import load_job

    with pytest.raises(ConfigError, match="train.beta must be a number"):
        load_job(write_job(str(tmp_path / "job.yml"), anet, "x.pth"), ["--train.beta", text])


# ---------------------------------------------------------------------------------------------- file modes


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return os.stat(path).st_mode & 0o777


def test_artefacts_honour_the_umask(anet, checkpoint, tmp_path, umask_022):
    out, cache = tmp_path / "out", tmp_path / "cache"
    job = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    r = invoke("run", job, "--out", out, "--cache", cache, "--device", "cpu")
    assert r.exit_code == 0, r.output
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if f != ".lock"]
    written = [f for f in files if f.startswith((str(out), str(cache)))]
    assert any(f.endswith(".h5") for f in written) and any(f.endswith("summary.json") for f in written)
    assert {f: _mode(f) for f in written} == {f: 0o644 for f in written}
    os.umask(0o077)
    from frameexit.atomic import atomic_write

    with atomic_write(tmp_path / "private.txt", "w") as h:
        h.write("x")
    assert _mode(tmp_path / "private.txt") == 0o600


# ---------------------------------------------------------------------------------------------- writability


def test_unwritable_out_fails_before_any_work(anet, checkpoint, tmp_path, monkeypatch):
    import jobs.infer
    import jobs.run

    job = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    _forbid(monkeypatch, jobs.infer, "load_model")
    r = invoke("infer", job, "--out", UNWRITABLE)
    assert r.exit_code == 1 and f"--out {UNWRITABLE} is not a writable directory" in r.output
    _forbid(monkeypatch, jobs.run, "extract")
    r = invoke("run", job, "--out", UNWRITABLE, "--cache", tmp_path / "cache")
    assert r.exit_code == 1 and f"--out {UNWRITABLE} is not a writable directory" in r.output
    file_in_the_way = tmp_path / "a-file"
    file_in_the_way.write_text("")
    r = invoke("infer", job, "--out", file_in_the_way / "out")
    assert r.exit_code == 1 and "is not a writable directory" in r.output


def test_unwritable_cache_fails_before_any_work(anet, checkpoint, tmp_path, monkeypatch):
    import jobs.extract

    job = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    _forbid(monkeypatch, jobs.extract, "cache_inputs")
    r = invoke("extract", job, "--cache", UNWRITABLE)
    assert r.exit_code == 1 and f"--cache {UNWRITABLE} is not a writable directory" in r.output
    assert "Traceback" not in r.output


# ---------------------------------------------------------------------------------------------- options before work


@pytest.mark.parametrize(
    "options, message",
    [
        (["--max-drop", "0.01"], "--baseline"),
        (["--max-cost-rise", "1"], "--baseline"),
        (["--budget", "nan"], "--budget"),
        (["--budget", "inf"], "--budget"),
    ],
)
def test_run_checks_report_options_before_extracting(anet, checkpoint, tmp_path, monkeypatch, options, message):
    import jobs.run

    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("previous report")
    job = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    _forbid(monkeypatch, jobs.run, "extract")
    r = invoke("run", job, "--out", out, "--cache", tmp_path / "cache", *options)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert (out / "summary.md").read_text() == "previous report"


def test_run_checks_the_calibration_run_before_extracting(anet, checkpoint, tmp_path, monkeypatch):
    # a malformed baseline: cli/test_bounded_inputs.py::test_run_refuses_a_malformed_baseline_before_extracting
    import jobs.run

    job = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    _forbid(monkeypatch, jobs.run, "extract")
    (tmp_path / "cal").mkdir()
    r = invoke("run", job, "--out", tmp_path / "o", "--budget", "5", "--calibrate-on", tmp_path / "cal")
    assert r.exit_code in (1, 2) and "sweep.parquet" in r.output


# ---------------------------------------------------------------------------------------------- empty splits


@pytest.mark.parametrize("command", ["infer", "run", "extract"])
def test_empty_split_is_an_error(anet, checkpoint, tmp_path, command):
    paths = dict(anet, split=str(tmp_path / "empty.txt"))
    open(paths["split"], "w").close()
    job = write_job(str(tmp_path / "job.yml"), paths, checkpoint)
    args = [command, job, "--cache", tmp_path / "cache", "--out", tmp_path / "o"]
    if command == "infer":
        args = [command, job, "--out", tmp_path / "o"]
    elif command == "extract":
        args = args[:-2]
    r = invoke(*args)
    assert r.exit_code == 1, r.output
    assert f"split file {paths['split']} lists no video" in r.output
    assert not os.path.exists(tmp_path / "o" / "metrics.json")


def test_split_where_every_video_is_skipped_is_an_error(anet, checkpoint, tmp_path):
    # a split in the `key nframes label` form of other tools: no key matches
    paths = dict(anet, split=str(tmp_path / "split.txt"))
    with open(paths["split"], "w") as f:
        f.write("v_alpha.mp4 23 3\nv_bravo.mp4 4 7\n")
    job = write_job(str(tmp_path / "job.yml"), paths, checkpoint)
    for args in (["infer", job, "--out", tmp_path / "o"], ["run", job, "--out", tmp_path / "o2"]):
        r = invoke(*args, "--cache", tmp_path / "cache") if args[0] == "run" else invoke(*args)
        assert r.exit_code == 1, r.output
        assert "no video of split" in r.output and "all 2 listed are skipped" in r.output
        assert "one video key per line" in r.output


# ---------------------------------------------------------------------------------------------- same videos


def test_unreadable_frame_after_the_exit_point_is_skipped_by_every_path(anet, checkpoint, tmp_path):
    from frameexit.sampling import COARSE_TO_FINE, sample_indices

    paths = _copy_fixture(anet, tmp_path / "data")
    folder = os.path.join(paths["frames"], "v_alpha.mp4")
    frames = sorted(os.listdir(folder))
    # first_threshold 0: every video exits at step 0 and infer runs the backbone on sampled frame order[0] only
    late = sample_indices(len(frames), 10)[COARSE_TO_FINE[-1]]
    assert late != sample_indices(len(frames), 10)[COARSE_TO_FINE[0]]
    damaged = os.path.join(folder, frames[late])
    data = open(damaged, "rb").read()
    with open(damaged, "wb") as f:
        f.write(data[: len(data) // 3])  # truncated JPEG
    job = write_job(str(tmp_path / "job.yml"), paths, checkpoint, first_threshold=0.0)
    r = invoke("infer", job, "--out", tmp_path / "infer", "--device", "cpu")
    assert r.exit_code == 0, r.output
    infer_videos = pq.read_table(tmp_path / "infer" / "videos.parquet").column("video").to_pylist()
    metrics = json.load(open(tmp_path / "infer" / "metrics.json"))
    assert "v_alpha.mp4" not in infer_videos
    (reason,) = [s["reason"] for s in metrics["skipped"] if s["video"] == "v_alpha.mp4"]
    assert frames[late] in reason
    assert metrics["runtime"]["frames_read"] == len(infer_videos)  # the check runs no backbone
    r = invoke("run", job, "--out", tmp_path / "run", "--cache", tmp_path / "cache", "--device", "cpu")
    assert r.exit_code == 0, r.output
    replay_videos = [r["video"] for r in job_setting_rows(tmp_path / "run")]
    assert replay_videos == infer_videos
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["n_videos_evaluated"] == metrics["n_videos"]


def test_dask_worker_logs_only_with_verbose(job_file, extracted, tmp_path):
    cache = os.path.dirname(extracted.cache_dir)  # read only

    def replay(*extra):
        args = [EXE, *extra, "replay", job_file, "--cache", cache, "--workers", "1", "--out", str(tmp_path / "o")]
        return subprocess.run(args, capture_output=True, text=True, timeout=300)

    # 8787 (distributed's dashboard port) taken, as by another command's cluster: nothing about it on stderr
    with socket.socket() as taken:
        try:
            taken.bind(("", 8787))
            taken.listen()
        except OSError:
            pass  # taken already
        quiet = replay()
    assert quiet.returncode == 0, quiet.stderr
    assert "distributed" not in quiet.stderr, quiet.stderr
    loud = replay("-v")
    assert loud.returncode == 0 and "INFO distributed" in loud.stderr


def test_train_with_unwritable_out_fails_before_extracting(anet, checkpoint, tmp_path, monkeypatch):
    import jobs.train

    job = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    _forbid(monkeypatch, jobs.train, "_extract_split")
    r = invoke("train", job, "--out", UNWRITABLE + "/head.pth", "--cache", tmp_path / "cache")
    assert r.exit_code == 1 and f"{UNWRITABLE} is not a writable directory" in r.output
    r = invoke("train", job, "--out", tmp_path, "--cache", tmp_path / "cache")
    assert r.exit_code == 2 and "is a directory" in r.output


@pytest.mark.parametrize("which", ["split", "labels", "classes"])
def test_dataset_file_that_is_not_utf8_is_named(anet, checkpoint, tmp_path, which):
    paths = dict(anet)
    paths[which] = str(tmp_path / f"{which}.bin")
    with open(paths[which], "wb") as f:
        f.write(b"\xff\xfe\x00binary\x80\x81")
    job = write_job(str(tmp_path / "job.yml"), paths, checkpoint)
    r = invoke("infer", job, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"{paths[which]}" in r.output and "is not UTF-8 text" in r.output


def test_run_with_the_previous_report_of_out_as_baseline(job_file, extracted, tmp_path):
    job, out, cache = job_file, tmp_path / "out", tmp_path / "cache"
    copy_cache(extracted.cache_dir, cache)  # this job's features: the runs extract nothing
    assert invoke("run", job, "--out", out, "--cache", cache, "--device", "cpu").exit_code == 0
    before = json.load(open(out / "summary.json"))
    r = invoke("run", job, "--out", out, "--cache", cache, "--baseline", out / "summary.json", "--max-drop", "0")
    assert r.exit_code == 0, r.output
    gate = json.load(open(out / "summary.json"))["baseline"]
    assert gate["passed"] and gate["checks"][0]["map"]["baseline"] == before["default"][0]["map"]
    markdown = (out / "summary.md").read_text()
    assert "(+0.0000)" in markdown and "-0.0000" not in markdown  # unchanged, not a drop of minus zero
