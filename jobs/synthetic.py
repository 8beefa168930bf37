"""A small synthetic dataset in the official layouts plus a random checkpoint (for benchmarks and smoke runs;
the demo has its own learnable dataset in :mod:`jobs.demo`).

``python -m jobs.synthetic OUT [--kind activitynet|minikinetics] [--videos N] [--seed S]`` writes

- ``OUT/frames/<video key>/img_00001.jpeg ...``: JPEG frames of a coloured disc whose
  colour is the class, at varying sizes and lengths (some shorter than 10 frames);
- ``OUT/split_val.txt``, ``OUT/classes.txt`` and ``OUT/labels.json`` (ActivityNet-1.3)
  or ``OUT/labels.csv`` (Mini-Kinetics); one split entry has no frame folder and
  one folder is empty, so the skipped list is exercised;
- ``OUT/checkpoint.pth``: a FrameExit model with a seeded random ResNet-18 in the
  official DataParallel key format. Its predictions are meaningless: it only
  shows the pipeline working without any download.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from PIL import Image, ImageDraw

from frameexit.backbone import random_backbone
from frameexit.checkpoint import save_checkpoint
from frameexit.head import FrameExit

NUM_CLASS = 200


def class_names(kind: str) -> list[str]:
    """200 class names with spaces and punctuation, like the real lists."""
    stem = "Activity" if kind == "activitynet" else "kinetics action"
    return [f"{stem} {i:03d} (synthetic)" for i in range(NUM_CLASS)]


def _frame(rng: np.random.Generator, cls: int, size: tuple[int, int]) -> Image.Image:
    w, h = size
    noise = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    colour = ((cls * 67) % 256, (cls * 131) % 256, (cls * 29) % 256)
    r = int(rng.integers(h // 8, h // 4))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
    ImageDraw.Draw(image).ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    return image


def make_dataset(out: str, *, kind: str = "activitynet", n_videos: int = 24, seed: int = 0) -> dict[str, str]:
    """Write the dataset files; returns their paths (frames, split, labels, classes)."""
    rng = np.random.default_rng(seed)
    names = class_names(kind)
    used = rng.choice(NUM_CLASS, size=8, replace=False)
    frames = os.path.join(out, "frames")
    os.makedirs(frames, exist_ok=True)
    rows = []
    for i in range(n_videos):
        labels = [int(used[i % len(used)])]
        if kind == "activitynet" and i % 6 == 5:
            labels.append(int(used[(i + 3) % len(used)]))
        if kind == "activitynet" and i == 4:
            labels = []
        start = int(rng.integers(0, 300))
        key = f"v_synth{i:03d}.mp4" if kind == "activitynet" else f"synth{i:03d}_{start:06d}_{start + 10:06d}.mp4"
        size = (int(rng.choice([320, 400, 466])), 350) if i % 2 else (350, int(rng.choice([350, 420])))
        folder = os.path.join(frames, key)
        os.makedirs(folder, exist_ok=True)
        for k in range(int(rng.integers(4, 25))):
            _frame(rng, labels[0] if labels else 0, size).save(
                os.path.join(folder, f"img_{k + 1:05d}.jpeg"), quality=90
            )
        rows.append((key, f"synth{i:03d}", start, labels))
    empty = "v_empty.mp4" if kind == "activitynet" else "empty_000000_000010.mp4"
    missing = "v_missing.mp4" if kind == "activitynet" else "missing_000000_000010.mp4"
    os.makedirs(os.path.join(frames, empty), exist_ok=True)
    paths = {
        "frames": frames,
        "split": os.path.join(out, "split_val.txt"),
        "classes": os.path.join(out, "classes.txt"),
        "labels": os.path.join(out, "labels.json" if kind == "activitynet" else "labels.csv"),
    }
    with open(paths["classes"], "w") as f:
        f.write("\n".join(names) + "\n")
    with open(paths["split"], "w") as f:
        f.write("\n".join([r[0] for r in rows] + [empty, missing]) + "\n")
    if kind == "activitynet":
        database = {
            vid: {"subset": "validation", "annotations": [{"label": names[c], "segment": [0.0, 5.0]} for c in labels]}
            for _, vid, _, labels in rows
        }
        for key in (empty, missing):
            database[key[2:-4]] = {"subset": "validation", "annotations": [{"label": names[int(used[0])]}]}
        with open(paths["labels"], "w") as f:
            json.dump({"version": "VERSION 1.3", "database": database}, f)
    else:
        lines = ["label,youtube_id,time_start,time_end,split,is_cc"]
        lines += [f'"{names[labels[0]]}",{vid},{start}.0,{start + 10}.0,val,0' for _, vid, start, labels in rows]
        lines += [f'"{names[int(used[0])]}",{k.split("_")[0]},0.0,10.0,val,0' for k in (empty, missing)]
        with open(paths["labels"], "w") as f:
            f.write("\n".join(lines) + "\n")
    return paths


def make_checkpoint(path: str, *, backbone: str = "torchvision.resnet18", seed: int = 0) -> None:
    """A FrameExit model with seeded random weights, saved in the official format."""
    net = random_backbone(backbone, seed=seed)
    with torch.no_grad():
        dim = net(torch.zeros(1, 3, 64, 64)).shape[1]
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed + 1)
        model = FrameExit(net, dim, NUM_CLASS)
    finally:
        torch.random.set_rng_state(generator_state)
    save_checkpoint(model.eval(), path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--kind", choices=["activitynet", "minikinetics"], default="activitynet")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = make_dataset(args.out, kind=args.kind, n_videos=args.videos, seed=args.seed)
    make_checkpoint(os.path.join(args.out, "checkpoint.pth"), seed=args.seed)
    print(json.dumps({**paths, "checkpoint": os.path.join(args.out, "checkpoint.pth")}, indent=1))


if __name__ == "__main__":
    main()
