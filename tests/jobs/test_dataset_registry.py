"""jobs.datasets.REGISTRY is the one place that knows each dataset (issue 21): its entries drive the command
line's choices, the job validation, the label readers, the accuracy metric, the prepare presets and the
bundled job files, and no other module names a dataset."""

import ast
import dataclasses
import os

import pytest
from helpers import ROOT

from cli import main
from jobs.config import SCHEMA, load_job
from jobs.datasets import BY_CLI_NAME, BY_NAME, REGISTRY, read_labels
from jobs.ffmpeg import ffmpeg_filter
from jobs.prepare import prepare_dataset
from jobs.report import default_metric

#: Modules allowed to name a dataset: the registry itself, the command line's help (cli_options' --dataset
#: choices are checked against the registry below) and the demo, whose data is ActivityNet's layout.
NAMING_ALLOWED = {"jobs/datasets.py", "cli_options.py", "cli.py", "jobs/demo.py"}


def test_entries_are_unique_and_complete():
    assert len(BY_NAME) == len(BY_CLI_NAME) == len(REGISTRY) > 0
    for spec in REGISTRY:
        assert spec.accuracy in ("map", "top1"), spec.name
        assert spec.fps > 0 and spec.min_side > 0 and spec.num_class > 0, spec.name
        assert os.path.isfile(os.path.join(ROOT, "jobs", spec.job_file)), spec.job_file


def test_the_command_line_offers_every_entry():
    prepare = main.commands["prepare"]
    for command in ("frames", "splits"):
        option = next(p for p in prepare.commands[command].params if p.name == "dataset")
        assert tuple(option.type.choices) == tuple(BY_CLI_NAME), command
        for spec in REGISTRY:
            assert f"{spec.cli_name}: " in option.help, (command, spec.cli_name)
    frames_help = next(p for p in prepare.commands["frames"].params if p.name == "dataset").help
    for spec in REGISTRY:  # the help's presets are the registry's (HVU's are said to be Mini-Kinetics's)
        told = f"{spec.fps} frame" in frames_help and f">= {spec.min_side} pixels" in frames_help
        assert told, spec.cli_name


def test_job_validation_follows_the_registry(tmp_path):
    assert SCHEMA["data"]["name"].choices == tuple(BY_NAME)
    for spec in REGISTRY:
        job = load_job(os.path.join(ROOT, "jobs", spec.job_file))
        assert job.data.name == spec.name and job.model.num_class == spec.num_class, spec.job_file
        assert job.train.config.loss == ("bce" if spec.multi_label else "softmax"), spec.name
        key_format = ["--data.key_format", "{youtube_id}.mp4"]
        if spec.key_format is None:
            with pytest.raises(ValueError, match="data.key_format names the videos"):
                load_job(os.path.join(ROOT, "jobs", spec.job_file), key_format)
        else:
            assert load_job(os.path.join(ROOT, "jobs", spec.job_file), key_format).data.key_format


def test_labels_presets_and_accuracy_come_from_the_entry(monkeypatch):
    for spec in REGISTRY:
        assert prepare_dataset(spec.cli_name) is spec
        assert ffmpeg_filter(**spec.frames_preset) == ffmpeg_filter(fps=spec.fps, min_side=spec.min_side)
        reader = lambda path, key_format, _n=spec.name: {_n: [path, key_format]}  # noqa: E731
        monkeypatch.setitem(BY_NAME, spec.name, dataclasses.replace(spec, read_labels=reader))
        assert read_labels(spec.name, "labels", "k") == {spec.name: ["labels", "k"]}
        assert default_metric(spec.name) == spec.accuracy
    assert default_metric("another dataset") == "map"


def test_no_other_module_names_a_dataset():
    names = {spec.name for spec in REGISTRY} | {spec.cli_name for spec in REGISTRY}
    names |= {spec.job_file for spec in REGISTRY}
    found = []
    for package in ("jobs", "cache", "reports", "frameexit", "."):
        folder = os.path.join(ROOT, package)
        files = [f for f in os.listdir(folder) if f.endswith(".py")]
        for name in files:
            relative = os.path.normpath(os.path.join(package, name))
            if relative in NAMING_ALLOWED:
                continue
            for node in ast.walk(ast.parse(open(os.path.join(folder, name)).read())):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert not found, found
