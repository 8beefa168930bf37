"""Issue 20, the smaller faults: names that break summary.md's tables, a closed stdout, reports about unlabelled
videos, X3D's paper-convention cost at another clip geometry, and the refusal of a pickled checkpoint."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from helpers import HVU_JOB, ROOT, activitynet_dataset, copy_cache, data_overrides, official_state, write_job

from cli import main
from frameexit.cost import measure_step_costs

X3D_JOB = "activitynet_x3d_s.yml"


def _copy(paths: dict[str, str], dest) -> dict[str, str]:
    """A private copy of a generated dataset (its files and frame folders), as a paths dict."""
    top = os.path.dirname(paths["frames"])
    shutil.copytree(top, dest)
    return {k: os.path.join(str(dest), os.path.relpath(v, top)) for k, v in paths.items()}


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every table of ``markdown``: its rows (the header first, the --- row left out), each a list of cells split
    at the unescaped ``|``."""
    tables, current = [], None
    for line in markdown.split("\n"):
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if current is None:
                current = []
                tables.append(current)
            if not all(set(c) <= {"-", " "} for c in cells):
                current.append(cells)
        else:
            current = None
    return tables


# ------------------------------------------------------------------------------ names holding | or a line break


def test_names_with_a_pipe_or_a_line_break_keep_every_summary_table_whole(hvu, checkpoint, tmp_path):
    paths = _copy(hvu, tmp_path / "data")
    # two categories renamed: one with a |, one with a line break (a quoted CSV cell may hold one)
    with open(paths["categories"], newline="") as f:
        rows = list(csv.reader(f))
    renamed = {"scene": "indoor|outdoor", "object": "thing\nor object"}
    with open(paths["categories"], "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *([tag, renamed.get(cat, cat)] for tag, cat in rows[1:])])
    with open(paths["split"], "a") as f:
        f.write("ytpipe|key_000001_000011.mp4\n")  # listed, without frames: a row of the skipped table
    piped = str(tmp_path / "frame|exit.pth")
    shutil.copy(checkpoint, piped)
    args = [
        *("--data.path_frame", paths["frames"], "--data.path_split", paths["split"]),
        *("--data.path_label", paths["labels"], "--data.path_classid", paths["classes"]),
        *("--data.path_category", paths["categories"], "--checkpoint.init", piped),
        *("--model.backbone.name", "torchvision.resnet18", "--model.backbone.output_dim", "512"),
        *("--model.num_class", "200", "--data.preprocessing_label.one_hot_encoding", "200"),
    ]
    out = tmp_path / "run"
    grid = ["--first-thresholds", "0.5,0.99", "--gate-thresholds", "0.5", "--budget", "100"]
    r = CliRunner().invoke(main, ["run", HVU_JOB, *args, "--cache", str(tmp_path / "cache"), "--out", str(out), *grid])
    assert r.exit_code == 0, r.output
    markdown = (out / "summary.md").read_text()
    tables = _tables(markdown)
    assert len(tables) >= 6  # results, categories, exactness, frontier, budget, histogram, skipped
    for table in tables:
        header, *body = table
        assert body and all(len(row) == len(header) for row in body), table
    cells = [c for table in tables for row in table for c in row]
    assert "indoor\\|outdoor ↑" in cells and "thing or object ↑" in cells
    assert "frame\\|exit.pth" in cells and "ytpipe\\|key_000001_000011.mp4" in cells
    assert "- checkpoint `frame|exit.pth`" in markdown  # outside a table, as it is
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["default"][0]["map_per_category"]) >= {"indoor|outdoor", "thing\nor object"}


# ------------------------------------------------------------------------------ a checkpoint of pickled objects


class Note:
    """A Python object pickled into a checkpoint beside its tensors (a training script's record, say)."""

    def __init__(self, text):
        self.text = text


@pytest.mark.parametrize(
    "content, why",
    [
        (
            {"module.x": torch.zeros(1), "note": Note("epoch 3")},
            f"it holds pickled Python objects other than tensors and containers ({__name__}.Note)",
        ),
        (b"not a checkpoint", "it is not a file of tensors written by torch.save"),
    ],
)
def test_a_checkpoint_weights_only_loading_refuses_is_named_without_torchs_advice(anet, tmp_path, content, why):
    path = tmp_path / "pickled.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    job = write_job(str(tmp_path / "job.yml"), anet, str(path))
    r = CliRunner().invoke(main, ["infer", job, "--out", str(tmp_path / "out"), "--no-progress"])
    assert r.exit_code == 1
    (line,) = r.output.strip().splitlines()
    assert line.startswith(f"Error: cannot load checkpoint {path} with weights_only=True: {why}")
    # torch's own message advises loading it with weights_only=False (any code in the file would run): never relayed
    assert "False" not in line and "safe_globals" not in line and "trust" not in line


# ------------------------------------------------------------------------------ X3D-S's paper figure, its clip only


def test_x3d_paper_cost_is_not_available_for_another_clip_geometry(tmp_path):
    paths = activitynet_dataset(str(tmp_path / "data"), [("alpha", 12, (96, 80), [3]), ("bravo", 5, (80, 96), [7])])
    ckpt = str(tmp_path / "x3d.pth")
    torch.save(official_state("x3d_s", seed=3), ckpt)
    common = [*data_overrides(paths), "--checkpoint.init", ckpt]
    # (the paper's clip, 13 frames of 160x160, keeps its 1.96: test_clip_backbones runs the job as shipped)
    # 4 frames of 64x64: the cost of a clip is not proportional to its size (the head's last convolution runs
    # once per clip), so no scaled figure: n/a, as for a backbone the paper has none for
    small = [*common, "--model.backbone.clip_length", "4"]
    small += ["--data.preprocessing.resize", "64", "--data.preprocessing.crop_center", "64"]
    r = CliRunner().invoke(main, ["infer", X3D_JOB, *small, "--out", str(tmp_path / "infer"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "infer" / "metrics.json").read_text())
    assert metrics["gflops"] is None and metrics["gflops_per_frame"] is None
    assert metrics["gmacs_measured"] > 0  # the measured cost follows the clip the backbone saw
    assert "GFLOPs         n/a (paper convention defined for resnet50, efficientnet_b3, and x3d_s at 13x160x160" in (
        r.output
    )
    own = measure_step_costs("pytorchvideo.x3d_s", input_size=160, clip_length=13, num_class=200).backbone
    longer = measure_step_costs("pytorchvideo.x3d_s", input_size=160, clip_length=26, num_class=200).backbone
    assert own == pytest.approx(1.96, abs=0.01) and longer != pytest.approx(2 * own, rel=1e-5)


# ------------------------------------------------------------------------------ unlabelled videos


UNLABELLED = [("alpha", 12, (320, 240), []), ("bravo", 4, (240, 320), []), ("charlie", 9, (300, 300), [])]


def test_a_budget_over_videos_without_labels_says_so_not_that_no_setting_fits(checkpoint, tmp_path):
    paths = activitynet_dataset(str(tmp_path / "data"), UNLABELLED)
    job = write_job(str(tmp_path / "job.yml"), paths, checkpoint)
    out = tmp_path / "run"
    grid = ["--first-thresholds", "0.5,0.99", "--gate-thresholds", "0.5", "--budget", "1000"]
    r = CliRunner().invoke(main, ["run", job, "--cache", str(tmp_path / "cache"), "--out", str(out), *grid])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    (entry,) = summary["budget"]["checkpoints"]
    why = "no evaluated video of this run has a label, so no setting has an accuracy (mAP) to choose by"
    assert entry["setting"] is None and entry["note"] == why
    assert f"| frameexit_resnet18.pth | - | - | - | - | {why} |" in (out / "summary.md").read_text()
    # below every setting's cost too, and whatever the metric: the missing labels are the reason, not the budget
    r = CliRunner().invoke(main, ["report", "--out", str(out), "--budget", "0.001", "--metric", "top1"])
    assert r.exit_code == 0, r.output
    note = json.loads((out / "summary.json").read_text())["budget"]["checkpoints"][0]["note"]
    assert note == "no evaluated video of this run has a label, so no setting has an accuracy (top-1) to choose by"


def test_top1_beside_a_count_of_videos_says_how_many_have_a_label(anet, checkpoint, extracted, tmp_path):
    # the fixture evaluates 6 videos, one of them (v_delta.mp4) without a label: top-1 is over the other 5
    job = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    r = CliRunner().invoke(main, ["infer", job, "--out", str(tmp_path / "infer"), "--no-progress"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "infer" / "metrics.json").read_text())
    assert "FrameExit infer: 6 videos evaluated (5 with a label), 2 skipped (of 8 listed)" in r.output
    assert f"  top-1          {metrics['top1']:.4f} (of the 5 videos with a label)\n" in r.output
    out = tmp_path / "run"
    grid = ["--first-thresholds", "0.5,0.99", "--gate-thresholds", "0.5"]
    copy_cache(extracted.cache_dir, tmp_path / "cache")  # this job's features: run extracts nothing
    r = CliRunner().invoke(main, ["run", job, "--cache", str(tmp_path / "cache"), "--out", str(out), *grid])
    assert r.exit_code == 0, r.output
    assert "settings over 6 videos (5 with a label, 2 skipped), order coarse_to_fine" in r.output
    assert json.loads((out / "replay.json").read_text())["n_videos_labelled"] == 5
    assert json.loads((out / "summary.json").read_text())["n_videos_labelled"] == 5
    markdown = (out / "summary.md").read_text()
    assert (
        "6 videos evaluated (5 with a label: Top-1 is over these, mAP counts the others as negatives), 2 skipped "
        "(of 8 listed)" in markdown
    )
    assert "8 listed in the split, 6 evaluated (5 with a label), 2 skipped." in markdown
    # with labels, a budget below every setting's cost is the reason, and the cheapest setting is named
    r = CliRunner().invoke(main, ["report", "--out", str(out), "--budget", "0.001"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    cheapest = min(r["gflops_measured"] for r in summary["frontier"])
    note = f"no setting fits the budget (the cheapest costs {cheapest:.2f})"
    assert summary["budget"]["checkpoints"][0]["note"] == note and summary["n_videos_labelled"] == 5


# ------------------------------------------------------------------------------ a reader that stops reading


def test_run_piped_into_head_finishes_every_output_and_says_its_summary_was_cut(checkpoint, tmp_path):
    paths = activitynet_dataset(str(tmp_path / "data"), [("alpha", 3, (96, 96), [3]), ("bravo", 2, (96, 96), [])])
    job = write_job(str(tmp_path / "job.yml"), paths, checkpoint)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "cli", "run", job, "--cache", str(tmp_path / "cache"), "--out", str(out)]
    command += ["--first-thresholds", "0.5,0.99", "--gate-thresholds", "0.5"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    # `frameexit run ... | head -1`: one line read, then the pipe closed while the command still has stages to run
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=600) == 0, stderr  # the status the command has with its stdout open
    assert first.startswith(b"FrameExit extract: "), first
    for name in ("sweep.parquet", "videos.parquet", "replay.json", "summary.md", "summary.json", "curve.png"):
        assert (out / name).is_file(), name
    assert "Note: standard output was closed before the summary was printed in full (broken pipe)" in stderr
    assert "Traceback" not in stderr and "Error" not in stderr


@pytest.mark.parametrize(
    "name, span",
    [
        ("plain.pth", "`plain.pth`"),
        ("a`b.pth", "``a`b.pth``"),
        ("``x.pth", "``` ``x.pth ```"),
        ("c\nd.pth", "`c d.pth`"),
    ],
)
def test_a_backtick_in_a_name_cannot_end_its_code_span(name, span):
    from reports.markdown import code

    assert code(name) == span
    # CommonMark: a span ends at the first run of backticks as long as its opening one; none inside is
    inner = span.strip("`").strip(" ") if "`" in name else span.strip("`")
    fence = len(span) - len(span.lstrip("`"))
    assert "`" * fence not in inner
