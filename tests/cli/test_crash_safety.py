"""Issue 20, items 1, 2 and 4: every command's files replace the previous ones as a set, one writer per folder.

Kills are real: a child process runs the command with ``os.replace``/``os.rename``
wrapped so that it SIGKILLs itself at a chosen step of the commit, and the
folder is then inspected as a reader (CI, ``report --baseline``) would find it.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner
from helpers import ROOT, copy_cache

from cli import main
from jobs.outputs import ALL_FILES, INFER_FILES, REPLAY_FILES, REPORT_FILES
from reports.commit import NEW_PREFIX, READY_PREFIX, output_set, settle

LOCK = ".frameexit.lock"


@pytest.fixture(scope="module")
def done(job_file, extracted, tmp_path_factory):
    """A job, its cache, and a folder holding a replay and its report (without a budget)."""
    root = tmp_path_factory.mktemp("crash-safety")
    copy_cache(extracted.cache_dir, root / "cache")  # a copy: run and train take its writer lock
    out = root / "template"
    r = CliRunner().invoke(
        main, ["replay", job_file, "--cache", str(root / "cache"), "--out", str(out), "--scheduler", "sync"]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["report", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return job_file, str(root / "cache"), str(out)


def _copy(template, dest):
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns(LOCK))
    return dest


def _files(folder, names=ALL_FILES):
    """``{name: bytes}`` of the frameexit outputs in ``folder``."""
    return {n: open(os.path.join(folder, n), "rb").read() for n in names if os.path.exists(os.path.join(folder, n))}


def _ours(folder):
    """Staging folders, markers and temporary files left in ``folder``."""
    return sorted(e for e in os.listdir(folder) if e.startswith((NEW_PREFIX, READY_PREFIX)) or e.endswith(".tmp"))


_KILL = """
import os, signal, sys
import reports.commit

calls = {{"n": 0}}

def killer(real, which):
    def call(src, dst, *args, **kwargs):
        src_path = os.path.abspath(src)
        names = (os.path.basename(src_path), os.path.basename(os.path.dirname(src_path)))
        if {where!r} == which and any(n.startswith({prefix!r}) for n in names):
            calls["n"] += 1
            if calls["n"] > {after}:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    return call

os.replace = killer(os.replace, "replace")
os.rename = killer(os.rename, "rename")
from cli import main
main({args!r})
"""


def _killed(args, *, where, after, prefix=READY_PREFIX):
    """Run ``frameexit ARGS`` in a child that SIGKILLs itself at the ``after+1``-th ``where`` (``os.replace``,
    ``os.rename``) of a path named ``prefix*`` or in a folder named so, before it happens; returns the child's
    exit status and stderr."""
    code = _KILL.format(where=where, after=after, prefix=prefix, args=[str(a) for a in args])
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stderr


def _report_args(out, *extra):
    return ["report", "--out", out, "--budget", "12", *extra]


# ---------------------------------------------------------------- 2: killed between the moves of one output set


@pytest.mark.parametrize(
    "where, after, prefix",
    [
        ("rename", 0, NEW_PREFIX),  # every file staged, killed just before the commit point
        ("replace", 0, READY_PREFIX),  # committed; the previous seal removed, nothing moved yet
        ("replace", 1, READY_PREFIX),  # summary.md moved, curve.png and summary.json not
        ("replace", 2, READY_PREFIX),  # all but summary.json moved
        ("replace", 0, NEW_PREFIX),  # killed in the staging folder, while writing its first file
    ],
)
def test_a_report_killed_at_any_step_leaves_old_or_unsealed_and_the_next_report_completes_it(
    done, tmp_path, where, after, prefix
):
    out = _copy(done[2], str(tmp_path / "out"))
    before = _files(out)
    rc, err = _killed(_report_args(out), where=where, after=after, prefix=prefix)
    assert rc == -9, err
    now = _files(out)
    committed = any(e.startswith(READY_PREFIX) for e in os.listdir(out))
    if committed:
        # a mix can be there, but never with a summary.json: what CI reads says the report is not complete
        assert "summary.json" not in now
    else:
        assert now == before  # the previous report, whole
    assert _files(out, REPLAY_FILES) == _files(done[2], REPLAY_FILES)  # the report's inputs are never touched

    # a reader finishes a committed set before reading it (here: the killed report, read as a baseline)
    other = _copy(done[2], str(tmp_path / "other"))
    r = CliRunner().invoke(main, ["report", "--out", other, "--baseline", os.path.join(out, "summary.json")])
    if committed:
        assert r.exit_code == 0, r.output
        assert json.load(open(os.path.join(out, "summary.json")))["budget"]["budget"] == 12
        assert _ours(out) == []
    else:
        assert r.exit_code == 0, r.output  # the previous report, a valid baseline
    # and the next report into the folder leaves one complete new set and nothing of the killed one
    r = CliRunner().invoke(main, _report_args(out))
    assert r.exit_code == 0, r.output
    assert json.load(open(os.path.join(out, "summary.json")))["budget"]["budget"] == 12
    assert set(_files(out)) == set(REPLAY_FILES) | set(REPORT_FILES)
    assert _ours(out) == []


@pytest.mark.parametrize("after", [0, 1])
def test_infer_killed_between_its_two_files_leaves_no_metrics_json_beside_a_new_videos_parquet(
    done, inferred, tmp_path, after
):
    job_file = done[0]
    out = _copy(inferred, str(tmp_path / "infer"))  # infer's outputs of this job
    old = _files(out)
    assert set(old) == set(INFER_FILES)
    # another threshold: other exit steps, so another videos.parquet
    rc, err = _killed(["infer", job_file, "--out", out, "--model.first_threshold", "0.5"], where="replace", after=after)
    assert rc == -9, err
    now = _files(out)
    assert "metrics.json" not in now  # never a metrics.json beside a videos.parquet it does not describe
    assert any(e.startswith(READY_PREFIX) for e in os.listdir(out))
    r = CliRunner().invoke(main, ["infer", job_file, "--out", out, "--model.first_threshold", "0.5"])
    assert r.exit_code == 0, r.output
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["first_threshold"] == 0.5 and _ours(out) == []


def test_a_run_killed_while_moving_leaves_no_seal_and_the_reader_finishes_it(done, tmp_path):
    job_file, cache_root, template = done
    out = _copy(template, str(tmp_path / "out"))
    args = ["run", job_file, "--cache", cache_root, "--out", out, "--scheduler", "sync", "--budget", "12"]
    rc, err = _killed(args, where="replace", after=2)  # sweep, videos, summary.md moved: not replay.json
    assert rc == -9, err
    now = _files(out)
    assert "replay.json" not in now and "summary.json" not in now
    # report reads the replay outputs: it finishes the killed run's set first (its own lock, then its inputs)
    r = CliRunner().invoke(main, ["report", "--out", out])
    assert r.exit_code == 0, r.output
    assert set(_files(out)) == set(REPLAY_FILES) | set(REPORT_FILES) and _ours(out) == []


# ----------------------------------------------------- 1: a report failing while it writes keeps the previous one


def test_a_report_failing_on_a_full_disk_keeps_the_previous_report_and_its_baseline(done, tmp_path):
    """A real full disk: a 2 MiB tmpfs in a private mount namespace, filled before the report runs."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a private tmpfs")
    mount, result = tmp_path / "mnt", tmp_path / "result"
    mount.mkdir()
    script = f"""
set -u
mount -t tmpfs -o size=2m tmpfs {mount} || exit 97
cp -r {done[2]} {mount}/out
head -c 4000000 /dev/zero > {mount}/fill 2>/dev/null
cd {ROOT}
{sys.executable} -m cli report --out {mount}/out --baseline {mount}/out/summary.json --max-drop 0 --budget 12 \
    > {tmp_path}/stdout 2> {tmp_path}/stderr
echo $? > {tmp_path}/rc
cp -r {mount}/out {result}
"""
    p = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    if p.returncode == 97 or (p.returncode != 0 and "unshare" in p.stderr):
        pytest.skip(f"cannot mount a private tmpfs here: {p.stderr.strip()}")
    rc = int((tmp_path / "rc").read_text())
    stderr = (tmp_path / "stderr").read_text()
    assert rc == 1, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "no space left on device" in stderr.lower(), stderr
    assert _files(str(result)) == _files(done[2])  # the previous report (the baseline) and the replay, whole
    assert _ours(str(result)) == []


# ------------------------------------------------------------------- leftovers of killed writers are removed


def test_the_next_writer_removes_leftovers_and_leaves_other_files(done, tmp_path):
    out = _copy(done[2], str(tmp_path / "out"))
    leftovers = [".summary.json.ab12cd_9.tmp", ".sweep.parquet.0123abcd.tmp", NEW_PREFIX + "x1y2z3w4"]
    for name in leftovers[:2]:
        open(os.path.join(out, name), "w").write("half")
    os.makedirs(os.path.join(out, leftovers[2]))
    open(os.path.join(out, leftovers[2], "summary.md"), "w").write("half")
    theirs = [".notes.tmp", ".summary.json.tmp", "mine.txt"]  # not names our writers make
    for name in theirs:
        open(os.path.join(out, name), "w").write("keep")
    r = CliRunner().invoke(main, ["report", "--out", out])
    assert r.exit_code == 0, r.output
    left = set(os.listdir(out))
    assert not left & set(leftovers)
    assert set(theirs) <= left


def test_a_committed_set_whose_plan_leads_outside_the_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    ready = out / (READY_PREFIX + "abcdefgh")
    ready.mkdir(parents=True)
    (ready / "commit.json").write_text(json.dumps({"files": ["../x"], "seals": ["../x"], "stale": []}))
    (ready / "x").write_text("x")
    with pytest.raises(OSError, match=r"not a plain file name: '\.\./x'"):
        settle(str(out))
    assert not (tmp_path / "x").exists()


def test_output_set_replaces_as_a_set_and_a_failing_body_leaves_the_folder_as_it_was(tmp_path):
    folder = str(tmp_path)
    for name, text in (("a", "old a"), ("b", "old b"), ("s", "old s"), ("stale", "old")):
        open(os.path.join(folder, name), "w").write(text)
    with pytest.raises(RuntimeError, match="disk"), output_set(folder, ["a", "b", "s"], seals=["s"]) as stage:
        open(os.path.join(stage, "a"), "w").write("new a")
        raise RuntimeError("disk")
    assert {n: open(os.path.join(folder, n)).read() for n in "abs"} == {"a": "old a", "b": "old b", "s": "old s"}
    with output_set(folder, ["a", "b", "s"], seals=["s"], stale=["stale"]) as stage:
        for n in "abs":
            open(os.path.join(stage, n), "w").write(f"new {n}")
    assert sorted(os.listdir(folder)) == ["a", "b", "s"]
    assert {n: open(os.path.join(folder, n)).read() for n in "abs"} == {"a": "new a", "b": "new b", "s": "new s"}


# ------------------------------------------------------------------------- 4: one writer per folder at a time

_HOLD = """
import sys, time
from frameexit.atomic import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    """A real process holding a folder's lock, as a running frameexit command does; yields the folder."""
    folder = tmp_path / "held"
    folder.mkdir()
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        yield folder
    finally:
        p.kill()
        p.wait()


def test_a_second_writer_of_an_output_folder_is_refused_before_any_work(done, held, tmp_path):
    job_file, cache_root, template = done
    for name in os.listdir(template):
        if name != LOCK:
            shutil.copy(os.path.join(template, name), held / name)
    before = _files(str(held))
    cache = tmp_path / "fresh-cache"
    for args in (
        ["run", job_file, "--cache", str(cache), "--out", str(held), "--scheduler", "sync"],
        ["replay", job_file, "--cache", cache_root, "--out", str(held), "--scheduler", "sync"],
        ["report", "--out", str(held)],
        ["infer", job_file, "--out", str(held)],
    ):
        started = time.monotonic()
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1, (args, r.output)
        assert f"another frameexit command is writing --out {held}" in r.output, r.output
        assert time.monotonic() - started < 30
    assert not cache.exists()  # run refused before extracting
    assert _files(str(held)) == before and _ours(str(held)) == []
    # reading is not writing: the held folder's report is a baseline for another folder
    other = _copy(template, str(tmp_path / "other"))
    r = CliRunner().invoke(main, ["report", "--out", other, "--baseline", str(held / "summary.json")])
    assert r.exit_code == 0, r.output


def test_a_second_prepare_frames_into_one_folder_is_refused(held, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "v_a.mp4").write_bytes(b"not read")
    (held / "v_done.mp4").mkdir()
    r = CliRunner().invoke(main, ["prepare", "frames", str(videos), str(held), "--dataset", "activitynet"])
    assert r.exit_code == 1, r.output
    assert f"Error: another frameexit prepare frames is writing {held}; wait for it to finish" in r.output
    assert sorted(os.listdir(held)) == [LOCK, "v_done.mp4"]


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    p.kill()
    p.wait()
    code = textwrap.dedent(
        """
        import sys
        from frameexit.atomic import folder_lock
        with folder_lock(sys.argv[1]):
            print("mine")
        """
    )
    q = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=ROOT, capture_output=True, text=True)
    assert q.stdout.strip() == "mine", q.stderr


def test_train_holds_its_checkpoint_file_and_removes_a_killed_trains_temporary_files(done, tmp_path):
    job_file, cache_root, _ = done
    small = ["--train.epochs_classifier", "2", "--train.epochs_gates", "2", "--train.hidden_dim", "16"]
    out = tmp_path / "head.pth"
    args = ["train", job_file, *small, "--train.batch_size", "4", "--cache", cache_root, "--out", str(out)]
    leftover, theirs = tmp_path / ".head.pth.k1ll3d_x.tmp", tmp_path / ".other.pth.k1ll3d_x.tmp"
    leftover.write_bytes(b"half a checkpoint")
    theirs.write_bytes(b"another train's")
    code = "import sys, time\nfrom frameexit.atomic import folder_lock\n"
    code += "with folder_lock(sys.argv[1], lock_name='.head.pth.lock'):\n    print('held', flush=True)\n    time.sleep(120)\n"
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1 and f"another frameexit train is writing --out {out}" in r.output, r.output
        assert leftover.exists() and not out.exists()
    finally:
        p.kill()
        p.wait()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert out.exists() and not leftover.exists() and theirs.exists()
