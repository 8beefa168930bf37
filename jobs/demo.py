"""`frameexit demo`: the whole method on a synthetic dataset that needs nothing but the installed package.

The dataset (ActivityNet layout) has 12 classes, a shape in a colour, visible in single frames: FrameExit
max-pools per-frame features and cannot see motion. In 30 % of the videos the object appears in only 4 of
the 10 sampled frames, so that reading more frames pays off only for them. :func:`make_dataset` is the
project's one generator of synthetic ActivityNet-layout data (the extraction benchmark uses it too).
The backbone is a ResNet-18 randomly initialised under a fixed seed (nothing can be downloaded): its random
projections tell these classes apart at 112 pixels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

from frameexit.backbone import random_backbone
from frameexit.checkpoint import save_checkpoint
from frameexit.head import FrameExit
from frameexit.sampling import sample_indices

from .config import load_job
from .extract import ExtractOptions, extract
from .replay import ReplayOptions, replay
from .report import ReportOptions, report
from .train import train

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
CLASSES = [f"{colour} {shape}" for shape in SHAPES for colour in COLOURS]
SIZE = 128  # frame side in pixels; preprocessing resizes to 112
BETAS = (0.0002, 0.005)
HARD_SHARE = 0.3  # share of hard videos
HARD_SHOWN = 4  # sampled frames (of 10) showing the object in a hard video


def _draw(image: Image.Image, shape: str, colour: tuple[int, int, int], rng: np.random.Generator, size: int) -> None:
    r = int(rng.integers(22, 35))
    cx, cy = (int(rng.integers(r, size - r)) for _ in range(2))
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)


def _frame(rng: np.random.Generator, cls: int | None, size: int) -> Image.Image:
    image = Image.fromarray(rng.integers(0, 70, size=(size, size, 3), dtype=np.uint8))
    if cls is not None:  # frames without the object are background only
        _draw(image, SHAPES[cls // len(COLOURS)], list(COLOURS.values())[cls % len(COLOURS)], rng, size)
    return image


def _paths(root: str) -> dict[str, str]:
    """The demo dataset's files under ``root``: frames, labels, classes, split_train, split_val."""
    names = ("frames", "labels.json", "classes.txt", "split_train.txt", "split_val.txt")
    return {name.split(".")[0]: os.path.join(root, name) for name in names}


def make_dataset(
    root: str, *, n_train: int = 1200, n_val: int = 300, seed: int = 0, size: int = SIZE
) -> dict[str, str]:
    """Write the demo dataset under ``root``, frames ``size`` pixels square; returns its paths (:func:`_paths`)."""
    rng = np.random.default_rng(seed)
    frames = _paths(root)["frames"]
    database: dict[str, Any] = {}
    splits: dict[str, list[str]] = {"training": [], "validation": []}
    for i in range(n_train + n_val):
        subset = "training" if i < n_train else "validation"
        cls = int(rng.integers(len(CLASSES)))
        n_frames = int(rng.integers(12, 21))
        hard = rng.random() < HARD_SHARE
        sampled = sample_indices(n_frames, 10)
        shown = set(sampled[rng.choice(10, size=HARD_SHOWN, replace=False)].tolist()) if hard else set(range(n_frames))
        vid = f"demo{i:04d}"
        folder = os.path.join(frames, f"v_{vid}.mp4")
        os.makedirs(folder, exist_ok=True)
        for k in range(n_frames):
            _frame(rng, cls if k in shown else None, size).save(
                os.path.join(folder, f"img_{k + 1:05d}.jpeg"), quality=90
            )
        database[vid] = {
            "subset": subset,
            "annotations": [{"label": CLASSES[cls], "segment": [0.0, float(n_frames)]}],
            "difficulty": "hard" if hard else "easy",
        }
        splits[subset].append(f"v_{vid}.mp4")
    paths = _paths(root)
    with open(paths["labels"], "w") as f:
        json.dump({"version": "demo", "database": database}, f)
    with open(paths["classes"], "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    for subset, key in (("training", "split_train"), ("validation", "split_val")):
        with open(paths[key], "w") as f:
            f.write("\n".join(splits[subset]) + "\n")
    return paths


def write_demo_job(out: str, paths: dict[str, str], backbone_checkpoint: str) -> str:
    """The demo's job file: the official ActivityNet config with the demo's data, 112-pixel frames, 12 classes."""
    official = os.path.join(os.path.dirname(os.path.abspath(__file__)), "activitynet_inference_2d.yml")
    with open(official) as f:
        job = yaml.safe_load(f)
    job["checkpoint"]["init"] = backbone_checkpoint
    job["data"].update(
        path_frame=paths["frames"],
        path_split=paths["split_train"],
        path_label=paths["labels"],
        path_classid=paths["classes"],
    )
    job["data"]["preprocessing"].update(resize=112, crop_center=112)
    job["data"]["preprocessing_label"]["one_hot_encoding"] = len(CLASSES)
    job["model"].update(num_class=len(CLASSES), first_threshold=0.95)
    job["model"]["backbone"].update(name="torchvision.resnet18", output_dim=512, pretrained=False)
    # in this key order: yaml.safe_dump below keeps it
    job["train"] = dict(epochs_classifier=25, epochs_gates=20, batch_size=64, lr=1e-3, lr_gates=1e-3, weight_decay=5e-4)
    job["train"].update(hidden_dim=1024, seed=0, val_path_split=paths["split_val"])
    job["replay"] = {"first_thresholds": "0.5:1:51", "gate_thresholds": "0:1:41"}
    # batched on every device: on a CPU per-step extraction takes 1.6 times as long at 112 pixels (README)
    job["extract"] = {"batching": "batched"}
    path = os.path.join(out, "demo_job.yml")
    with open(path, "w") as f:
        f.write("# The demo job (written by frameexit demo): the official ActivityNet config, demo data.\n")
        yaml.safe_dump(job, f, sort_keys=False)
    return path


@dataclass(frozen=True)
class DemoResult:
    out_dir: str
    run_dir: str
    checkpoints: list[str]
    summary: dict[str, Any]
    ten_frame_top1: dict[str, float]


def demo(out: str, *, progress: bool | None = None, say: Callable[[str], None] = print, seed: int = 0) -> DemoResult:
    """Generate the dataset, extract both splits, train two heads (two betas), replay on validation, report."""
    os.makedirs(out, exist_ok=True)
    data_dir = os.path.join(out, "data")
    if os.path.isfile(os.path.join(data_dir, "split_val.txt")):
        say(f"demo data already in {data_dir}")
        paths = _paths(data_dir)
    else:
        say(f"generating the demo dataset in {data_dir} (12 classes, 1200 training and 300 validation videos)")
        paths = make_dataset(data_dir, seed=seed)
    backbone_ckpt = os.path.join(out, "backbone_resnet18_seed0.pth")
    if not os.path.isfile(backbone_ckpt):
        net = random_backbone("torchvision.resnet18", seed=seed)
        # the head's layers draw their initial weights from torch's global generator: seeded on a fork of it,
        # so that the caller's random state is left as it was (jobs.process: nothing seeds the process)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = FrameExit(net, 512, len(CLASSES), hidden_dim=64)
        save_checkpoint(head.eval(), backbone_ckpt)
    job_file = write_demo_job(out, paths, backbone_ckpt)
    cache = os.path.join(out, "cache")
    options = ExtractOptions(cache_root=cache, shard_size=128, batch_videos=16)  # data.num_workers: 0 (the job's)
    say("extracting features of the validation split")
    val_job = load_job(job_file, ["--data.path_split", paths["split_val"]])
    extract(val_job, options, progress=progress)
    checkpoints, ten = [], {}
    for beta in BETAS:
        path = os.path.join(out, "checkpoints", f"frameexit_resnet18_beta{beta:g}.pth")
        say(f"training a FrameExit head with beta {beta:g} on the training split (features extracted once)")
        result = train(
            load_job(job_file, ["--train.beta", repr(beta)]), path, extract_options=options, progress=progress
        )
        checkpoints.append(path)
        ten[os.path.basename(path)] = result.validation["top1"][-1] if result.validation else float("nan")
    run_dir = os.path.join(out, "run")
    say("replaying the threshold sweep on the validation split for every head")
    replay_job = load_job(
        job_file, ["--data.path_split", paths["split_val"], "--checkpoint.init", "[" + ", ".join(checkpoints) + "]"]
    )
    replay(replay_job, run_dir, ReplayOptions(cache_root=cache), progress=progress)
    reported = report(run_dir, ReportOptions(metric="top1"))  # one label per video: top-1 is the natural accuracy
    return DemoResult(out, run_dir, checkpoints, reported.summary, ten)
