"""Issue 20, the smaller faults: names that break summary.md's tables, a closed stdout, reports about unlabelled
videos, X3D's paper-convention cost at another clip geometry, and the refusal of a pickled checkpoint."""

import csv
import json
import os
import re
import shutil

from click.testing import CliRunner

from cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HVU_JOB = os.path.join(ROOT, "jobs", "hvu_inference_2d.yml")


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
