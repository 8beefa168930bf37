"""Issue 20: inputs bounded or refused in one line: YAML aliases in job files, malformed frameexit JSON
documents (replay.json, a baseline summary.json), split videos without a label entry."""

import os
import shutil

import pytest
from click.testing import CliRunner
from helpers import write_job

from cli import main


def _one_line_error(result, *needles: str) -> None:
    """``result`` failed with exit status 1 and one line holding every needle, without a traceback."""
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


# ---------------------------------------------------------------------------------------------- job files (item 10)

#: The classic "billion laughs": 9 levels of 10 aliases, 10^9 strings once expanded (a few hundred bytes of YAML).
BILLION_LAUGHS = "\n".join(
    ["    - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"    - &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
)


def _with_free_form(job_file: str, value: str) -> str:
    """``job_file`` with ``value`` (YAML, indented under the key) as the free-form video_multihot_labels."""
    text = open(job_file).read()
    old = '    video_multihot_labels: ""\n'
    assert old in text
    out = job_file.replace(".yml", "-bomb.yml")
    with open(out, "w") as f:
        f.write(text.replace(old, f"    video_multihot_labels:\n{value}\n"))
    return out


@pytest.mark.parametrize("command", ["infer", "replay", "prepare check"])
def test_a_yaml_alias_bomb_in_a_free_form_key_is_refused_before_any_work(private, tmp_path, command):
    _, job_file = private
    bomb = _with_free_form(job_file, BILLION_LAUGHS)
    line = open(bomb).read().splitlines().index("    - &l1 [" + ", ".join(["*l0"] * 10) + "]") + 1
    out = tmp_path / "out"
    args = [*command.split(), bomb]
    if command in ("infer", "replay"):
        args += ["--out", str(out)]
    if command == "replay":
        args += ["--cache", str(tmp_path / "cache")]
    r = CliRunner().invoke(main, args)
    _one_line_error(r, f"{bomb}, line {line}", "alias")
    assert not out.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("value", "override", "needles"),
    [
        ("      " + "[" * 100_000 + "]" * 100_000, None, ["line {first}:", "nested more than 32 levels"]),
        ('      "\xff"', None, ["is not UTF-8 text"]),
        ("      [a, b\n    c: d", None, ["is not valid YAML: expected ',' or ']'", "(line {second}, column 6)"]),
        ("      - " + "x" * (1 << 20), None, ["larger than 1024 KiB: not a job file"]),
        ('      ""', "[&a [1, 1], *a, *a]", ["override --data.preprocessing_label.video_multihot_labels", "(*a)"]),
    ],
    ids=["deep", "not-utf8", "invalid", "huge", "alias-override"],
)
def test_a_job_file_or_override_beyond_bounds_is_refused_in_one_line(private, value, override, needles):
    _, job_file = private
    bomb = _with_free_form(job_file, value)
    if value.startswith('      "\xff'):
        data = open(bomb, "rb").read().replace("\xff".encode(), b"\xff")
        open(bomb, "wb").write(data)
    args = ["prepare", "check", bomb, "--max-missing", "2"]
    if override is not None:
        args.append(f"--data.preprocessing_label.video_multihot_labels={override}")
    first = open(bomb, "rb").read().splitlines().index(b"    video_multihot_labels:") + 2  # the value's line
    r = CliRunner().invoke(main, args)
    _one_line_error(r, *(n.format(first=first, second=first + 1) for n in needles))
    if override is None:
        assert bomb in r.output


# ------------------------------------------------------------------- replay.json, summary.json as a baseline (item 11)

CHECKPOINT = "frameexit_resnet18.pth"  # the checkpoint fixture's file name: a key of video_results
REPORT_FILES = ("summary.json", "summary.md", "curve.png")


@pytest.fixture(scope="module")
def reported(job_file, reported):
    """The session's job file and its replayed-and-reported run folder (read only: a test copies it)."""
    return job_file, reported


def _nested(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _mutated(path: str, dest: str, where: tuple, value) -> str:
    """A copy of the JSON document at ``path`` written to ``dest`` with the value at key path ``where`` replaced
    (``value`` a str starting with RAW: is written instead of the whole document, as text)."""
    import json

    if isinstance(value, str) and value.startswith("RAW:"):
        text = value[4:]
    else:
        doc = json.load(open(path))
        node = doc
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
        text = json.dumps(doc)
    with open(dest, "w") as f:
        f.write(text)
    return dest


def _snapshot(run: str) -> dict[str, bytes]:
    return {name: open(os.path.join(run, name), "rb").read() for name in REPORT_FILES}


#: (key path, new value, the key path and problem the error names)
SUMMARY_MUTATIONS = [
    (("frontier",), "abc", 'frontier is not a JSON list (got "abc")'),
    (("frontier", 0), 5, "frontier[0] is not a JSON object (got 5)"),
    (("default",), {}, "default is not a JSON list (got a JSON object)"),
    (("default", 0), 3, "default[0] is not a JSON object (got 3)"),
    (("default", 0, "map"), "high", 'default[0].map is not a finite number or null (got "high")'),
    (("default", 0, "top1"), [0.5], "default[0].top1 is not a finite number or null (got a JSON list)"),
    (
        ("default", 0, "first_threshold"),
        float("inf"),
        "default[0].first_threshold is not a finite number or null (got Infinity)",
    ),
    (("default", 0, "checkpoint"), 5, "default[0].checkpoint is not a string (got 5)"),
    (("default", 0, "first_threshold"), None, "default 0: policy 'frameexit' needs a finite first_threshold, got None"),
    (("default", 0, "policy"), "gates", "default 0: policy 'gates' is not one of frameexit, confidence, fixed, oracle"),
    (("default", 0, "gflops_measured"), "x", 'default[0].gflops_measured is not a finite number or null (got "x")'),
    (("videos",), {"v": 1}, "videos is not a JSON list (got a JSON object)"),
    (("videos", 0), 7, "videos[0] is not a string (got 7)"),
    (("video_results",), [], "video_results is not a JSON object (got a JSON list)"),
    (
        ("video_results", CHECKPOINT, "exit_step", 0),
        "one",
        f'video_results[{CHECKPOINT!r}].exit_step[0] is not an integer (got "one")',
    ),
    (("video_results", CHECKPOINT, "hit", 0), 1, f"video_results[{CHECKPOINT!r}].hit[0] is not true or false or null"),
    (("provenance", "checkpoints"), 3, "provenance.checkpoints is not a JSON list (got 3)"),
    (("provenance", "checkpoints", 0, "sha256"), 5, "provenance.checkpoints[0].sha256 is not a string (got 5)"),
    (("dataset",), ["activitynet1.3"], "dataset is not a string (got a JSON list)"),
    (("higher_is_better", "map"), "yes", "higher_is_better['map'] is not true or false (got \"yes\")"),
    (("exactness", "checkpoints"), "x", 'exactness.checkpoints is not a JSON list (got "x")'),
    (("n_videos_listed",), True, "n_videos_listed is not an integer (got true)"),
    (("provenance", "job", "deep"), _nested(100), "provenance.job.deep[0][0][0]"),
    ((), "RAW:" + "[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    ((), "RAW:" + '{"schema_version": 2, "default": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
]


@pytest.mark.parametrize(("where", "value", "problem"), SUMMARY_MUTATIONS, ids=lambda v: None)
def test_a_malformed_baseline_is_refused_in_one_line_naming_the_key(reported, tmp_path, where, value, problem):
    _, source = reported
    run = str(tmp_path / "run")
    shutil.copytree(source, run)
    before = _snapshot(run)
    bad = _mutated(os.path.join(run, "summary.json"), str(tmp_path / "baseline.json"), where, value)
    r = CliRunner().invoke(main, ["report", "--out", run, "--baseline", bad])
    _one_line_error(r, bad, problem)
    assert _snapshot(run) == before


#: (file, key path, new value, the key path and problem the error names)
REPLAY_MUTATIONS = [
    (("checkpoints",), 3, "checkpoints is not a JSON list (got 3)"),
    (("checkpoints", 0, "hidden_dim"), 4096.5, "checkpoints[0].hidden_dim is not an integer (got 4096.5)"),
    (("default_metrics", 0, "gmacs_measured"), "x", "default_metrics[0].gmacs_measured is not a finite number"),
    (("default_metrics", 0, "exit_histogram"), 5, "default_metrics[0].exit_histogram is not a JSON list (got 5)"),
    (
        ("default_metrics", 0, "map_per_category"),
        "x",
        "default_metrics[0].map_per_category is not a JSON object or null",
    ),
    (("default_metrics", 0, "checkpoint"), [], "default_metrics[0].checkpoint is not a string (got a JSON list)"),
    (("default_setting", "first_threshold"), None, "default_setting.first_threshold is not a finite number (got null)"),
    (("skipped", 0, "video"), 5, "skipped[0].video is not a string (got 5)"),
    (("exactness", "probe_videos"), 5, "exactness.probe_videos is not a JSON list (got 5)"),
    (("exactness", "checkpoints", 0), "x", 'exactness.checkpoints[0] is not a JSON object (got "x")'),
    (("dataset",), [], "dataset is not a string (got a JSON list)"),
    (("job",), "x", 'job is not a JSON object (got "x")'),
    (("job", "deep"), _nested(100), "job.deep" + "[0]" * 63 + " is nested more than 64 levels deep"),
    ((), "RAW:" + "[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
]


@pytest.mark.parametrize(("where", "value", "problem"), REPLAY_MUTATIONS, ids=lambda v: None)
def test_a_malformed_replay_json_is_refused_in_one_line_naming_the_key(reported, tmp_path, where, value, problem):
    _, source = reported
    run = str(tmp_path / "run")
    shutil.copytree(source, run)
    before = _snapshot(run)
    meta = os.path.join(run, "replay.json")
    _mutated(meta, meta, where, value)
    r = CliRunner().invoke(main, ["report", "--out", run])
    _one_line_error(r, meta, problem)
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    ("name", "column", "values", "problem"),
    [
        ("sweep.parquet", "map", "x", "column 'map' is string, not double"),
        (
            "sweep.parquet",
            "first_threshold",
            None,
            "row 0: policy 'frameexit' needs a finite first_threshold, got None",
        ),
        ("videos.parquet", "labels", 3, "column 'labels' is int64, not list<item: int32>"),
        ("videos.parquet", "first_threshold", "x", "column 'first_threshold' is string, not double"),
    ],
)
def test_a_replay_table_of_other_column_types_is_refused_naming_the_column(
    reported, tmp_path, name, column, values, problem
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, source = reported
    run = str(tmp_path / "run")
    shutil.copytree(source, run)
    before = _snapshot(run)
    path = os.path.join(run, name)
    table = pq.read_table(path)
    array = pa.array([values] * table.num_rows, pa.float64() if values is None else None)
    pq.write_table(table.set_column(table.column_names.index(column), column, array), path)
    r = CliRunner().invoke(main, ["report", "--out", run])
    _one_line_error(r, path, problem)
    assert _snapshot(run) == before


def test_run_refuses_a_malformed_baseline_before_extracting(reported, tmp_path):
    job_file, source = reported
    bad = _mutated(os.path.join(source, "summary.json"), str(tmp_path / "baseline.json"), ("frontier",), "abc")
    out, cache = tmp_path / "out", tmp_path / "cache"
    r = CliRunner().invoke(main, ["run", job_file, "--out", str(out), "--cache", str(cache), "--baseline", bad])
    _one_line_error(r, bad, 'frontier is not a JSON list (got "abc")')
    assert not cache.exists() and not (out / "replay.json").exists()


def test_a_line_break_read_from_a_document_stays_inside_the_one_line_error(reported, tmp_path):
    _, source = reported
    run = str(tmp_path / "run")
    shutil.copytree(source, run)
    where = ("provenance", "checkpoints", 0, "sha256")
    bad = _mutated(os.path.join(run, "summary.json"), str(tmp_path / "baseline.json"), where, "abc\ndef")
    r = CliRunner().invoke(main, ["report", "--out", run, "--baseline", bad])
    _one_line_error(r, "is not comparable with this run", "SHA-256 abc\\ndef")


# ------------------------------------------------------------------------------- prepare check: labels (item 12)


def _without_alpha(paths: dict[str, str], dataset: str) -> str:
    """Remove the label entry of the fixture's video 'alpha' (which has frames); its split key."""
    import json

    if dataset == "activitynet1.3":
        doc = json.load(open(paths["labels"]))
        del doc["database"]["alpha"]
        json.dump(doc, open(paths["labels"], "w"))
        return "v_alpha.mp4"
    lines = open(paths["labels"]).read().splitlines()
    (row,) = [line for line in lines if ",ytalpha," in line]
    open(paths["labels"], "w").write("\n".join(line for line in lines if line != row) + "\n")
    return next(key for key in open(paths["split"]).read().split() if key.startswith("ytalpha_"))


@pytest.mark.parametrize(
    ("dataset", "fixture", "frameless"),
    [("activitynet1.3", "anet", 2), ("minikinetics", "minik", 1), ("hvu", "hvu", 1)],
)
def test_prepare_check_counts_split_videos_without_a_label_entry_as_skipped(
    request, tmp_path, dataset, fixture, frameless
):
    source = request.getfixturevalue(fixture)
    top = os.path.dirname(source["frames"])
    shutil.copytree(top, tmp_path / "data")
    paths = {k: str(tmp_path / "data" / os.path.relpath(v, top)) for k, v in source.items()}
    job = write_job(str(tmp_path / "job.yml"), paths, "unused.pth", name=dataset)
    key = _without_alpha(paths, dataset)
    # the frameless videos alone are allowed for: the one without a label entry fails the check
    r = CliRunner().invoke(main, ["prepare", "check", job, "--max-missing", str(frameless)])
    assert r.exit_code == 1, r.output
    lines = r.output.rstrip().splitlines()
    assert lines[0].endswith("; 1 without a label entry") and f"  no label entry: {key}" in lines
    assert lines[-1] == (
        f"Error: prepare check failed: {frameless + 1} split video(s) would be skipped, {frameless} without frames "
        f"and 1 without an entry in the label file {paths['labels']} ({key}) (at most {frameless} allowed by "
        "--max-missing)"
    )
    # --max-missing counts every video the evaluation would skip, for either reason
    r = CliRunner().invoke(main, ["prepare", "check", job, "--max-missing", str(frameless + 1)])
    assert r.exit_code == 0 and f"  no label entry: {key}" in r.output, r.output
