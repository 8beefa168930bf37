"""What a stage computes is the job's: an option that stands for a job key sets that key (issue 21, settings).

A flag and its job key give the same cache key and the same results; replay finds a cache from the job's
``extract`` keys alone; the flag wins over the job file; bad values in the job are refused naming the key.
"""

import json
import os

import pyarrow.parquet as pq
import pytest
from helpers import invoke, write_job

from cli_options import OPTIONS
from frameexit.errors import ConfigError
from jobs.config import OPTION_KEYS, SCHEMA, load_job, with_options


def _with_keys(job_file: str, text: str) -> str:
    """A copy of ``job_file`` with the YAML ``text`` (top-level sections) appended."""
    path = job_file.replace(".yml", f"-{abs(hash(text))}.yml")
    with open(job_file) as f, open(path, "w") as out:
        out.write(f.read() + text)
    return path


@pytest.fixture(scope="module")
def tf32(anet, checkpoint, tmp_path_factory):
    """A cache extracted with the non-default precision tf32 given as a flag, and a job file that says the same."""
    root = tmp_path_factory.mktemp("settings")
    job_file = write_job(str(root / "job.yml"), anet, checkpoint)
    cache = str(root / "cache")
    r = invoke("extract", job_file, "--cache", cache, "--precision", "tf32", "--scheduler", "sync")
    assert r.exit_code == 0, r.output
    (cache_dir,) = os.listdir(cache)
    return job_file, _with_keys(job_file, "extract:\n  precision: tf32\n"), cache, os.path.join(cache, cache_dir)


def test_every_shorthand_option_names_the_job_key_it_sets():
    for name, key in OPTION_KEYS.items():
        option = OPTIONS[name](lambda: None).__click_params__[0]
        assert f"sets {key}" in option.help, name
        spec = SCHEMA
        for part in key.split("."):
            spec = spec[part]  # every key exists in the schema


def test_extract_with_the_flag_or_the_job_key_gives_one_cache(tf32):
    job_file, tf32_job, cache, cache_dir = tf32
    manifest = json.load(open(os.path.join(cache_dir, "manifest.json")))
    assert manifest["inputs"]["precision"] == "tf32"
    # the same key from the job key: the cache is complete, no backbone work
    r = invoke("extract", tf32_job, "--cache", cache, "--scheduler", "sync")
    assert r.exit_code == 0, r.output
    assert os.listdir(cache) == [os.path.basename(cache_dir)]
    # and from an override of the job key
    r = invoke("extract", job_file, "--extract.precision", "tf32", "--cache", cache, "--scheduler", "sync")
    assert r.exit_code == 0, r.output
    assert os.listdir(cache) == [os.path.basename(cache_dir)]


def test_replay_finds_the_cache_from_the_job_keys_alone(tf32, tmp_path):
    job_file, tf32_job, cache, cache_dir = tf32
    grid = ("--first-thresholds", "0.5,0.9,0.99", "--gate-thresholds", "0.2,0.5")
    r = invoke("replay", tf32_job, "--cache", cache, "--out", tmp_path / "key", "--scheduler", "sync", *grid)
    assert r.exit_code == 0, r.output
    r = invoke("replay", job_file, "--cache", cache, "--out", tmp_path / "flag", "--precision", "tf32", *grid)
    assert r.exit_code == 0, r.output
    key, flag = (json.load(open(tmp_path / d / "replay.json")) for d in ("key", "flag"))
    assert key["cache"]["directory"] == flag["cache"]["directory"] == os.path.abspath(cache_dir)
    # the recorded job says what was computed, whichever way it was set
    assert key["job"]["extract"]["precision"] == flag["job"]["extract"]["precision"] == "tf32"
    assert key["job"] == flag["job"]
    for name in ("sweep.parquet", "videos.parquet"):
        assert pq.read_table(tmp_path / "key" / name).equals(pq.read_table(tmp_path / "flag" / name)), name
    # without the key or the flag, the job's cache is fp32's: not there
    r = invoke("replay", job_file, "--cache", cache, "--out", tmp_path / "none")
    assert r.exit_code == 1 and "no feature cache for this job" in r.output, r.output


def test_a_grid_flag_and_its_job_key_give_the_same_sweep(tf32, tmp_path):
    _, tf32_job, cache, _ = tf32
    by_flag = ("--first-thresholds", "0.5:1:6", "--gate-thresholds", "0.1,0.5", "--per-video", "all")
    by_key = _with_keys(
        tf32_job, 'replay:\n  first_thresholds: "0.5:1:6"\n  gate_thresholds: [0.1, 0.5]\n  per_video: all\n'
    )
    by_override = ("--replay.first_thresholds", "0.5:1:6", "--replay.gate_thresholds", "[0.1, 0.5]")
    runs = {
        "flag": ("replay", tf32_job, *by_flag),
        "key": ("replay", by_key),
        "override": ("replay", tf32_job, *by_override, "--replay.per_video", "all"),
        "order": ("replay", tf32_job, *by_flag, "--order", "sequential"),
        "order key": ("replay", tf32_job, *by_flag, "--model.adaptive.input_order", "[0,1,2,3,4,5,6,7,8,9]"),
    }
    for name, args in runs.items():
        r = invoke(*args, "--cache", cache, "--out", tmp_path / name, "--scheduler", "sync")
        assert r.exit_code == 0, (name, r.output)
    tables = {n: [pq.read_table(tmp_path / n / f) for f in ("sweep.parquet", "videos.parquet")] for n in runs}
    assert tables["flag"][0].column("policy").to_pylist().count("frameexit") == 12
    assert tables["flag"][1].column("policy").to_pylist().count("frameexit") >= 12 * 6
    for name in ("key", "override"):
        assert all(a.equals(b) for a, b in zip(tables[name], tables["flag"], strict=True)), name
    assert all(a.equals(b) for a, b in zip(tables["order"], tables["order key"], strict=True))
    assert not tables["order"][1].equals(tables["flag"][1])  # the order does change the exits
    records = {n: json.load(open(tmp_path / n / "replay.json")) for n in runs}
    assert records["flag"]["job"]["replay"] == records["key"]["job"]["replay"] | {
        "first_thresholds": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    }
    assert records["order"]["job"]["model"]["adaptive"]["input_order"] == list(range(10))
    assert records["order"]["order_name"] == records["order key"]["order_name"] == "sequential"


def test_the_flag_wins_over_the_job_file(anet, checkpoint, tmp_path):
    job_file = _with_keys(
        write_job(str(tmp_path / "job.yml"), anet, checkpoint),
        "extract:\n  precision: bf16\n  channels_last: true\n  batching: per-step\n  dtype: float16\n"
        "replay:\n  first_thresholds: [0.5]\n  per_video: all\n",
    )
    job = load_job(job_file)
    assert (job.extract.precision, job.extract.channels_last, job.extract.batching) == ("bf16", True, "per-step")
    assert job.replay.first_thresholds == (0.5,) and job.replay.per_video == "all"
    given = dict(precision="fp32", channels_last=False, batching="auto", dtype=None, first_thresholds=(0.7, 0.9))
    flagged = with_options(job, dict(given, per_video="default", num_workers=3, order="sequential"))
    assert (flagged.extract.precision, flagged.extract.channels_last, flagged.extract.batching) == (
        "fp32",
        False,
        "auto",
    )
    assert flagged.extract.dtype == "float16"  # not given: the job's
    assert flagged.replay.first_thresholds == (0.7, 0.9) and flagged.replay.per_video == "default"
    assert flagged.data.num_workers == 3 and flagged.model.input_order == tuple(range(10))
    # the defaults of a job without the keys are the options' former defaults
    plain = load_job(write_job(str(tmp_path / "plain.yml"), anet, checkpoint))
    assert (plain.extract.dtype, plain.extract.precision, plain.extract.channels_last, plain.extract.batching) == (
        "float32",
        "fp32",
        False,
        "auto",
    )
    assert plain.replay.per_video == "default"


def test_coarse_to_fine_needs_ten_frames_as_before(anet, checkpoint, tmp_path):
    job = load_job(
        write_job(str(tmp_path / "job.yml"), anet, checkpoint),
        ["--data.num_frames", "4", "--model.adaptive.input_order", "[0,1,2,3]"],
    )
    assert with_options(job, {"order": "sequential"}).model.input_order == (0, 1, 2, 3)
    with pytest.raises(ConfigError, match="the coarse-to-fine order is defined for 10 frames, not 4"):
        with_options(job, {"order": "coarse_to_fine"})


@pytest.mark.parametrize(
    "text, message",
    [
        ("extract:\n  precision: fp8\n", "extract.precision must be one of 'fp32', 'tf32', 'bf16', 'fp16', got 'fp8'"),
        ("extract:\n  dtype: float64\n", "extract.dtype must be one of 'float32', 'float16', got 'float64'"),
        ("extract:\n  batching: fast\n", "extract.batching must be one of 'auto', 'batched', 'per-step', got 'fast'"),
        ("extract:\n  channels_last: 3\n", "extract.channels_last must be a boolean, got 3"),
        ("extract:\n  dtype:\n", "extract.dtype must be set, got an empty value"),
        ("extract:\n  precison: tf32\n", "unknown key extract.precison; did you mean extract.precision?"),
        ("replay:\n  per_video: every\n", "replay.per_video must be one of 'default', 'all', got 'every'"),
        ("replay:\n  per_video:\n", "replay.per_video must be set, got an empty value"),
    ],
)
def test_a_bad_value_in_the_job_names_its_key(anet, checkpoint, tmp_path, text, message):
    job_file = _with_keys(write_job(str(tmp_path / "job.yml"), anet, checkpoint), text)
    with pytest.raises(ConfigError) as caught:
        load_job(job_file)
    assert str(caught.value) == f"{job_file}: {message}"
    r = invoke("replay", job_file, "--out", tmp_path / "o")
    assert r.exit_code == 1 and f"Error: {job_file}: {message}" in r.output, r.output


def test_a_bad_override_of_a_new_key_names_it(anet, checkpoint, tmp_path):
    job_file = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    with pytest.raises(ConfigError, match=r"^override --extract.precision: extract.precision must be one of"):
        load_job(job_file, ["--extract.precision", "fp8"])
    r = invoke("extract", job_file, "--precision", "fp8")
    assert r.exit_code == 2 and "'fp8' is not one of 'fp32', 'tf32', 'bf16', 'fp16'" in r.output, r.output
