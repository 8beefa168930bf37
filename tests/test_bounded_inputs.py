"""Issue 20: inputs bounded or refused in one line: YAML aliases in job files, malformed frameexit JSON
documents (replay.json, a baseline summary.json), split videos without a label entry."""

import os
import shutil

import pytest
from click.testing import CliRunner
from helpers import write_job

from cli import main


@pytest.fixture
def private(anet, checkpoint, tmp_path):
    """A private copy of the ActivityNet fixture and its job file."""
    top = os.path.dirname(anet["frames"])
    shutil.copytree(top, tmp_path / "data")
    paths = {k: str(tmp_path / "data" / os.path.relpath(v, top)) for k, v in anet.items()}
    return paths, write_job(str(tmp_path / "job.yml"), paths, checkpoint)


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
