"""Test fixtures generated on the fly: JPEG folders in the official layouts and
random checkpoints in the official key format (written here from the official
names, independently of frameexit's own model classes)."""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import torch
import torchvision
from PIL import Image

NUM_CLASS = 200
HIDDEN = 4096

# the checkout's root (this file is tests/helpers.py) and its bundled job files
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANET_JOB = os.path.join(ROOT, "jobs", "activitynet_inference_2d.yml")
MINIK_JOB = os.path.join(ROOT, "jobs", "minikinetics_inference_2d.yml")
HVU_JOB = os.path.join(ROOT, "jobs", "hvu_inference_2d.yml")
# the console script beside this interpreter (it runs the code its installation points at: PYTHONPATH decides)
EXE = os.path.join(os.path.dirname(sys.executable), "frameexit")


def class_names(n: int = NUM_CLASS) -> list[str]:
    return [f"Class {i:03d}, with punctuation (x)" for i in range(n)]


def write_frames(folder: str, n: int, size: tuple[int, int], seed: int, colour: tuple[int, int, int] = (200, 40, 40)):
    """``n`` JPEG frames ``img_00001.jpeg ...`` of ``size`` (width, height): noise plus a moving coloured square."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    w, h = size
    for k in range(n):
        img = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
        x = (k * 17) % max(w - 60, 1)
        img[40:100, x : x + 60] = colour
        Image.fromarray(img).save(os.path.join(folder, f"img_{k + 1:05d}.jpeg"), quality=90)


# (key stem, number of frames, (width, height), labels); labels index into class_names()
VIDEOS = [
    ("alpha", 23, (320, 240), [3]),
    ("bravo", 4, (240, 320), [7]),  # fewer than 10 frames: frames repeat
    ("charlie", 12, (300, 300), [3, 7]),  # multi-label
    ("delta", 1, (224, 260), []),  # no labels; shorter side already 224
    ("echo", 15, (260, 224), [11]),
    ("foxtrot", 9, (330, 250), [7]),
]


def activitynet_dataset(root: str, videos=VIDEOS) -> dict[str, str]:
    """Official ActivityNet-1.3 layout: JSON labels, class list, split file, frame folders.

    Besides ``videos`` (default VIDEOS): ``v_empty.mp4`` (empty folder), ``v_nofolder.mp4`` (split entry
    without a folder).
    """
    names = class_names()
    frames = os.path.join(root, "frames")
    database = {}
    for i, (stem, n, size, labels) in enumerate(videos):
        write_frames(os.path.join(frames, f"v_{stem}.mp4"), n, size, seed=i)
        database[stem] = {
            "subset": "validation",
            "duration": 30.0,
            "annotations": [{"label": names[c], "segment": [1.0, 5.0]} for c in labels],
        }
    os.makedirs(os.path.join(frames, "v_empty.mp4"))
    for stem in ("empty", "nofolder"):
        database[stem] = {"subset": "validation", "annotations": [{"label": names[3], "segment": [0, 1]}]}
    database["trainonly"] = {"subset": "training", "annotations": [{"label": names[5], "segment": [0, 1]}]}
    paths = {
        "frames": frames,
        "split": os.path.join(root, "split_val.txt"),
        "labels": os.path.join(root, "activity_net.v1-3.min.json"),
        "classes": os.path.join(root, "classes.txt"),
    }
    with open(paths["labels"], "w") as f:
        json.dump({"version": "VERSION 1.3", "database": database}, f)
    with open(paths["classes"], "w") as f:
        f.write("\n".join(names) + "\n")
    keys = [f"v_{stem}.mp4" for stem, *_ in videos] + ["v_empty.mp4", "v_nofolder.mp4"]
    with open(paths["split"], "w") as f:
        f.write("\n".join(reversed(keys)) + "\n")  # unsorted on purpose
    return paths


def minikinetics_dataset(root: str) -> dict[str, str]:
    """Official Mini-Kinetics layout: Kinetics CSV with quoted labels, class list, split file, frame folders."""
    names = class_names()
    frames = os.path.join(root, "frames")
    lines = ["label,youtube_id,time_start,time_end,split,is_cc"]
    keys = []
    for i, (stem, n, size, labels) in enumerate(VIDEOS[:4]):
        start = 7 * i + 1
        key = f"yt{stem}_{start:06d}_{start + 10:06d}.mp4"
        write_frames(os.path.join(frames, key), n, size, seed=10 + i)
        lines.append(f'"{names[labels[0] if labels else 0]}",yt{stem},{start}.0,{start + 10}.0,val,0')
        keys.append(key)
    lines.append(f'"{names[4]}",ytnofolder,5.0,15.0,val,0')
    keys.append("ytnofolder_000005_000015.mp4")
    paths = {
        "frames": frames,
        "split": os.path.join(root, "split_val_minikinetics.txt"),
        "labels": os.path.join(root, "kinetics_val.csv"),
        "classes": os.path.join(root, "minik_classInd.txt"),
    }
    _write_lines(paths, labels=lines, classes=names, split=keys)
    return paths


HVU_CATEGORIES = ("scene", "object", "action", "event", "attribute", "concept")
# HVU tags per video (indices into class_names()): several per video, one video without any
HVU_TAGS = {
    "alpha": [3, 10, 17],
    "bravo": [7],
    "charlie": [3, 7, 22, 41],
    "delta": [],
    "echo": [11, 100],
    "foxtrot": [7, 8],
}


def hvu_dataset(root: str) -> dict[str, str]:
    """HVU v1.0 layout: tags CSV (``|``-separated), Tag,Category CSV, class list, split file, frame folders.

    Keys in the Kinetics style; class ``i`` is in category ``HVU_CATEGORIES[i % 6]``. Besides VIDEOS:
    ``ytnofolder_...`` (a CSV row without frames).
    """
    names = class_names()
    frames = os.path.join(root, "frames")
    lines, keys = ["Tags,youtube_id,time_start,time_end"], []
    for i, (stem, n, size, _) in enumerate(VIDEOS):
        start = 3 * i
        key = f"yt{stem}_{start:06d}_{start + 10:06d}.mp4"
        write_frames(os.path.join(frames, key), n, size, seed=20 + i)
        tags = "|".join(names[c] for c in HVU_TAGS[stem])
        lines.append(f'"{tags}",yt{stem},{start},{start + 10}')
        keys.append(key)
    lines.append(f'"{names[5]}",ytnofolder,4,14')
    keys.append("ytnofolder_000004_000014.mp4")
    paths = {
        "frames": frames,
        "split": os.path.join(root, "split_val_hvu.txt"),
        "labels": os.path.join(root, "HVU_Val_V1.0.csv"),
        "classes": os.path.join(root, "hvu_classes.txt"),
        "categories": os.path.join(root, "HVU_Tags_Categories_V1.0.csv"),
    }
    _write_lines(paths, labels=lines, classes=names, split=keys)
    with open(paths["categories"], "w") as f:
        rows = [f'"{name}",{HVU_CATEGORIES[i % 6]}' for i, name in enumerate(names)]
        f.write("\n".join(["Tag,Category", *rows]) + "\n")
    return paths


def _write_lines(paths: dict[str, str], **lines: list[str]) -> None:
    """Each ``paths[name]`` as text, one of ``lines[name]`` per line."""
    for name, content in lines.items():
        with open(paths[name], "w") as f:
            f.write("\n".join(content) + "\n")


def official_head_shapes(feat_dim: int, num_class: int = NUM_CLASS, hidden: int = HIDDEN, steps: int = 10):
    """Names and shapes of the official head parameters (without ``module.``), from SEMANTICS 9."""
    shapes = {
        "mlp.layers.0.weight": (hidden, feat_dim),
        "mlp.layers.0.bias": (hidden,),
        "mlp.layers.1.weight": (hidden,),
        "mlp.layers.1.bias": (hidden,),
        "mlp.layers.1.running_mean": (hidden,),
        "mlp.layers.1.running_var": (hidden,),
        "mlp.layers.1.num_batches_tracked": (),
    }
    for g in range(steps - 1):
        p = f"exit_selector.{g}."
        shapes.update({p + "conv1.weight": (128, hidden, 1, 1), p + "conv1.bias": (128,)})
        shapes.update({p + "conv2.weight": (64, 128, 1, 1), p + "conv2.bias": (64,)})
        for bn, c in (("bn1", 128), ("bn2", 64)):
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                shapes[p + f"{bn}.{leaf}"] = (c,)
            shapes[p + f"{bn}.num_batches_tracked"] = ()
        shapes.update({p + "linear.weight": (1, 128), p + "linear.bias": (1,)})
    for t in range(steps):
        shapes.update({f"classifiers.{t}.weight": (num_class, hidden), f"classifiers.{t}.bias": (num_class,)})
    return shapes


def x3d_s(seed: int = 0):
    """pytorchvideo's X3D-S (13 frames of 160 pixels), randomly initialised under ``seed``, in eval mode."""
    with warnings.catch_warnings():
        # fvcore, imported by pytorchvideo, scripts a loss with the deprecated torch.jit.script at import
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
        from pytorchvideo.models.x3d import create_x3d

    torch.manual_seed(seed)
    return create_x3d(input_clip_length=13, input_crop_size=160, depth_factor=2.2).eval()


def official_state(
    backbone: str = "resnet18",
    *,
    seed: int = 0,
    num_class: int = NUM_CLASS,
    prefix: bool = True,
    logit_scale: float = 4.0,
) -> dict[str, torch.Tensor]:
    """A random FrameExit state dict in the official format (``module.`` keys unless ``prefix=False``).

    ``backbone``: a torchvision model name (its children but the last, as ``backbone.<i>.*``), or
    ``x3d_s`` (pytorchvideo's parameter names without the classification projection, ``backbone.blocks.*``).
    """
    torch.manual_seed(seed)
    state = {}
    if backbone == "x3d_s":
        for k, v in x3d_s(seed).state_dict().items():
            if not k.startswith("blocks.5.proj."):
                state[f"backbone.{k}"] = v.clone()
    else:
        net = torchvision.models.get_model(backbone, weights=None)
        children = list(net.children())[:-1]
        for i, child in enumerate(children):
            for k, v in child.state_dict().items():
                state[f"backbone.{i}.{k}"] = v.clone()
    feat_dim = {"resnet18": 512, "resnet34": 512, "efficientnet_b3": 1536}.get(backbone, 2048)
    rng = np.random.default_rng(seed)
    for name, shape in official_head_shapes(feat_dim, num_class).items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            state[name] = torch.tensor(0, dtype=torch.int64)
            continue
        if leaf == "running_mean":
            arr = rng.normal(0, 0.1, size=shape)
        elif leaf == "running_var":
            arr = rng.uniform(0.5, 1.5, size=shape)
        elif ".bn" in name or "layers.1" in name:
            arr = rng.uniform(0.8, 1.2, size=shape) if leaf == "weight" else rng.normal(0, 0.1, size=shape)
        elif leaf == "bias":
            arr = rng.normal(0, 0.1, size=shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            scale = logit_scale if name.startswith("classifiers") else 1.0
            arr = rng.normal(0, scale * np.sqrt(2.0 / fan_in), size=shape)
        state[name] = torch.from_numpy(arr.astype(np.float32))
    if prefix:
        state = {"module." + k: v for k, v in state.items()}
    return state


def write_job(
    path: str,
    paths: dict[str, str],
    checkpoint: str,
    *,
    name: str = "activitynet1.3",
    backbone: str = "torchvision.resnet18",
    output_dim: int = 512,
    first_threshold: float = 0.99,
) -> str:
    """A job file in the official config format (with ``data.path_category`` when ``paths`` has categories)."""
    category = f"\n  path_category: {paths['categories']}" if "categories" in paths else ""
    text = f"""help: False
checkpoint:
  init: {checkpoint}
data:
  name: {name}
  path_frame: {paths["frames"]}
  path_split: {paths["split"]}
  path_label: {paths["labels"]}
  path_classid: {paths["classes"]}{category}
  preprocessing:
    to_tensor: True
    resize: 224
    crop_center: 224
    normalize:
      mean: [0.485, 0.456, 0.406]
      std: [0.229, 0.224, 0.225]
  preprocessing_label:
    video_multihot_labels: ""
    one_hot_encoding: 200
  num_frames: 10
  num_workers: 0
  shuffle: False
model:
  first_threshold: {first_threshold}
  backbone:
    type: 2d
    name: {backbone}
    pretrained: True
    requires_grad: False
    truncate_modules: -1
    output_dim: {output_dim}
  pooling:
    name: max
  name: adaptive
  adaptive:
    input_order: [5, 0, 9, 2, 7, 4, 6, 3, 8, 1]
  num_class: 200
"""
    with open(path, "w") as f:
        f.write(text)
    return path


def load_fixture(paths: dict[str, str], name: str = "activitynet1.3", num_class: int = NUM_CLASS):
    """The dataset of a generated fixture (paths from activitynet_dataset / minikinetics_dataset)."""
    from jobs.datasets import load_dataset

    return load_dataset(
        name,
        path_frame=paths["frames"],
        path_split=paths["split"],
        path_label=paths["labels"],
        path_classid=paths["classes"],
        num_class=num_class,
    )


def key_inputs(**changes):
    """Cache-key inputs of a fixed 2D ActivityNet job, with ``changes``."""
    from cache.key import CacheKeyInputs

    fixed = dict(
        backbone="resnet50",
        truncate_modules=-1,
        backbone_digest="b" * 64,
        resize=224,
        crop=224,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        num_frames=10,
        sampling="linspace",
        dtype="float32",
        precision="fp32",
        channels_last=False,
        batching="batched",
        dataset="activitynet1.3",
        split_digest="s" * 64,
        labels_digest="l" * 64,
        classes_digest="c" * 64,
        key_format=None,
        num_class=200,
        normalize_first=False,
        clip_length=1,
        clip_stride=1,
    )
    return CacheKeyInputs(**{**fixed, **changes})


def data_overrides(paths: dict[str, str]) -> list[str]:
    """The official ``--data.*`` overrides that point a job at a generated fixture's files."""
    return [
        *("--data.path_frame", paths["frames"], "--data.path_split", paths["split"]),
        *("--data.path_label", paths["labels"], "--data.path_classid", paths["classes"]),
    ]


def hvu_overrides(hvu, checkpoint, first_threshold):
    """The bundled HVU job on the fixture: its files, a random ResNet-18 and the fixture's 200 tags."""
    return [
        *data_overrides(hvu),
        *("--data.path_category", hvu["categories"], "--checkpoint.init", checkpoint),
        *("--model.backbone.name", "torchvision.resnet18", "--model.backbone.output_dim", "512"),
        *("--model.num_class", "200", "--data.preprocessing_label.one_hot_encoding", "200"),
        *("--model.first_threshold", str(first_threshold)),
    ]


def cached_videos(cache) -> list[str]:
    """Every video key of a :class:`cache.manifest.FeatureCache`, in shard order (sorted)."""
    return [v for shard in cache.iter_shards() for v in shard.videos]


def cached_video(cache, video: str):
    """``(features (n_frames, feat_dim), labels (num_class,), frame_indices (n_frames,))`` of one cached video."""
    for index, entry in enumerate(cache.manifest.shards):
        if video in entry.videos:
            shard = cache.read(index)
            if video in shard.videos:
                row = shard.videos.index(video)
                return shard.features[row], shard.labels[row], shard.frame_indices[row]
    raise KeyError(f"video {video!r} is not in cache {cache.directory}")


def invoke(*args):
    """``frameexit ARGS`` in this process (click's runner), every argument as a string; exceptions propagate."""
    from click.testing import CliRunner

    from cli import main

    return CliRunner().invoke(main, [str(a) for a in args], prog_name="frameexit", catch_exceptions=False)


def copy_cache(cache_dir: str, root) -> str:
    """A copy of the cache directory ``cache_dir`` under the cache root ``root`` (same key), without its lock and the
    exit tables replays stored in it: what a test that writes into a cache, or holds its lock, works on instead of a
    shared cache."""
    import shutil

    from cache.exit_tables import TABLES_DIR

    dest = os.path.join(str(root), os.path.basename(cache_dir))
    shutil.copytree(cache_dir, dest, ignore=shutil.ignore_patterns(".lock", TABLES_DIR))
    return dest


def frameexit_rows(rows, **thresholds):
    """The rows of frameexit's gates (sweep.parquet, videos.parquet) of a replay, at ``thresholds`` if given: the
    other exit policies' rows and the named settings' per-video rows left out."""
    return [
        r for r in rows if r.get("policy", "frameexit") == "frameexit" and all(r[k] == v for k, v in thresholds.items())
    ]


def job_setting_rows(folder) -> list[dict]:
    """The per-video rows of a replay (or infer) output folder at its job's setting (replay.json's)."""
    import json

    import pyarrow.parquet as pq

    with open(os.path.join(folder, "replay.json")) as handle:
        setting = json.load(handle)["default_setting"]
    rows = pq.read_table(os.path.join(folder, "videos.parquet")).to_pylist()
    if setting.get("policy", "frameexit") != "frameexit":
        return [r for r in rows if r["policy"] == setting["policy"]]
    keys = ("first_threshold", "gate_threshold")
    return frameexit_rows(rows, **{k: setting[k] for k in keys})
