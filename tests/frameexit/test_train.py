"""Training on cached features: pseudo-labels, loss, export format, and the effect of beta."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import copy_cache, job_setting_rows, official_head_shapes, write_job
from oracles import exit_steps

from frameexit.errors import ConfigError, DatasetError
from frameexit.head_pass import exit_tables
from frameexit.sampling import COARSE_TO_FINE
from frameexit.train import TrainConfig, exit_tolerance, pseudo_exit_labels, train_head
from jobs.config import load_job
from jobs.extract import ExtractOptions
from jobs.infer import infer
from jobs.replay import ReplayOptions, replay
from jobs.train import train


def test_pseudo_label_rule_on_hand_made_losses():
    beta = 0.01
    # tolerance beta * exp(t / 2) for t = 1, 2, 3: 0.016487, 0.027183, 0.044817
    assert exit_tolerance(beta, 3) == pytest.approx([0.0164872, 0.0271828, 0.0448169], rel=1e-5)
    losses = np.array(
        [
            [0.0164872, 0.03, 0.04],  # t=1 just under its tolerance; t=2 above; t=3 under
            [0.0165, 0.0271, 0.5],  # t=1 above; t=2 under
            [np.nan, 0.0, 0.0],  # no label: never an exit target
        ]
    )
    assert pseudo_exit_labels(losses, beta).tolist() == [[True, False, True], [False, True, False], [False, True, True]]
    assert pseudo_exit_labels(np.array([[0.027]]), 0.01).tolist() == [[False]]  # t=1: 0.027 > 0.0165


def _synthetic(seed=0, n=240, dim=32, n_class=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_class, n)
    labels = np.zeros((n, n_class), dtype=np.float32)
    labels[np.arange(n), y] = 1
    proto = np.abs(rng.normal(size=(n_class, dim))) * 2
    feats = np.abs(rng.normal(size=(n, 10, dim))).astype(np.float32) * 0.5
    for i in range(n):
        shown = range(10) if i % 2 else rng.choice(10, 3, replace=False)
        for t in shown:
            feats[i, t] += proto[y[i]]
    return feats, labels


def test_larger_beta_gives_fewer_frames():
    feats, labels = _synthetic()
    frames = {}
    for beta in (1e-4, 1e-1):
        log = []
        model = train_head(
            feats,
            labels,
            COARSE_TO_FINE,
            TrainConfig(epochs_classifier=15, epochs_gates=15, hidden_dim=128, beta=beta),
            on_epoch=lambda s, e, loss, m, _log=log: _log.append((s, loss)),
        )
        model.set_head_dtype()
        t = exit_tables(model, feats, COARSE_TO_FINE, videos=[f"v{i:03d}" for i in range(len(feats))], labels=labels)
        frames[beta] = (exit_steps(t.confidence0, t.gates, 1.0, 0.5) + 1).mean()
        stage1 = [loss for s, loss in log if s == "classifier"]
        assert stage1[-1] < 0.5 * stage1[0]  # the classification loss goes down
    assert frames[1e-1] < frames[1e-4]


def test_training_from_a_cache_exports_an_official_checkpoint(anet, checkpoint, extracted, tmp_path):
    job_file = write_job(str(tmp_path / "job.yml"), anet, checkpoint, first_threshold=0.5)
    overrides = [
        "--train.epochs_classifier",
        "8",
        "--train.epochs_gates",
        "4",
        "--train.hidden_dim",
        "64",
        "--train.batch_size",
        "4",
        "--train.val_path_split",
        anet["split"],
    ]
    out = tmp_path / "trained.pth"
    copy_cache(extracted.cache_dir, tmp_path / "cache")  # this split's features (the head is not in the key)
    options = ExtractOptions(cache_root=str(tmp_path / "cache"))
    result = train(load_job(job_file, overrides), str(out), extract_options=options)
    losses = [e["loss"] for e in result.history if e["stage"] == "classifier"]
    assert losses[-1] < losses[0]
    assert len(result.validation["top1"]) == 10 and result.n_videos == 6
    state = torch.load(out, weights_only=True)
    original = torch.load(checkpoint, weights_only=True)
    expected = {"module." + k for k in official_head_shapes(512, hidden=64)}
    expected |= {k for k in original if k.startswith("module.backbone.")}
    assert set(state) == expected  # the official key set, module.-prefixed, with the backbone
    assert all(torch.equal(state[k], original[k]) for k in original if k.startswith("module.backbone."))
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    # the checkpoint loads in infer and replay, with identical exits
    trained_job = load_job(job_file, ["--checkpoint.init", str(out)])
    inferred = infer(trained_job, str(tmp_path / "infer"), device="cpu")
    replay(trained_job, str(tmp_path / "replay"), ReplayOptions(cache_root=str(tmp_path / "cache")))
    a = {
        r["video"]: (r["exit_step"], r["prediction"], r["confidence"])
        for r in pq.read_table(inferred.videos_path).to_pylist()
    }
    b = {r["video"]: (r["exit_step"], r["prediction"], r["confidence"]) for r in job_setting_rows(tmp_path / "replay")}
    assert a == b and len(a) == 6


def test_demo_dataset_layout(tmp_path):
    import json
    import os

    from jobs.datasets import load_dataset
    from jobs.demo import CLASSES, HARD_SHOWN, make_dataset

    paths = make_dataset(str(tmp_path), n_train=8, n_val=4, seed=1)
    db = json.load(open(paths["labels"]))["database"]
    assert sorted({v["subset"] for v in db.values()}) == ["training", "validation"]
    for split, n in (("split_train", 8), ("split_val", 4)):
        ds = load_dataset(
            "activitynet1.3",
            path_frame=paths["frames"],
            path_split=paths[split],
            path_label=paths["labels"],
            path_classid=paths["classes"],
            num_class=len(CLASSES),
        )
        assert len(ds.videos) == n and not ds.skipped
        assert all(12 <= len(v.frames) <= 20 and len(v.labels) == 1 for v in ds.videos)
    assert len(CLASSES) == 12 and HARD_SHOWN < 10
    assert all(os.path.getsize(p) > 0 for p in ds.videos[0].frames)


def _train_job(anet, checkpoint, tmp_path, *extra: str):
    """A small training job on the fixture (split ``anet['split']``) with overrides ``extra``."""
    job_file = write_job(str(tmp_path / "job.yml"), anet, checkpoint, first_threshold=0.5)
    small = ["--train.epochs_classifier", "2", "--train.epochs_gates", "2", "--train.hidden_dim", "16"]
    return load_job(job_file, [*small, "--train.batch_size", "4", *extra])


def test_broken_split_files_name_their_own_key(anet, checkpoint, tmp_path):
    missing = tmp_path / "absent_val.txt"
    binary = tmp_path / "binary_val.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 20)
    blank = tmp_path / "blank_val.txt"
    blank.write_text("\n  \n")
    unknown = tmp_path / "unknown_val.txt"
    unknown.write_text("v_nobody.mp4\nv_nofolder.mp4\n")  # not in the labels; in the labels without frames
    options = ExtractOptions(cache_root=str(tmp_path / "cache"))
    out = tmp_path / "trained.pth"
    for split, reason in (
        (missing, "not found"),
        (tmp_path, "not found"),  # a directory
        (binary, "not UTF-8 text"),
        (blank, "lists no video"),
        (unknown, "v_nofolder.mp4: no frame folder"),  # why each video was left out
    ):
        with pytest.raises(DatasetError) as err:
            train(
                _train_job(anet, checkpoint, tmp_path, "--train.val_path_split", str(split)),
                str(out),
                extract_options=options,
            )
        msg = str(err.value)
        assert "train.val_path_split" in msg and str(split) in msg and reason in msg, msg
        assert "data.path_split" not in msg, msg
        assert not out.exists()
    assert "v_nobody.mp4" in msg
    # the training split itself: its own key, and no traceback for an empty or undecodable file
    for split, reason in (
        (blank, "lists no video"),
        (binary, "not UTF-8 text"),
        (unknown, "v_nobody.mp4"),
    ):
        with pytest.raises(DatasetError) as err:
            train(
                _train_job(anet, checkpoint, tmp_path, "--data.path_split", str(split)),
                str(out),
                extract_options=options,
            )
        msg = str(err.value)
        assert "data.path_split" in msg and str(split) in msg and reason in msg, msg
        assert "train.val_path_split" not in msg
        assert not out.exists()


def test_training_settings_that_cannot_train_are_refused(anet, checkpoint, tmp_path):
    job_file = write_job(str(tmp_path / "job.yml"), anet, checkpoint)
    for override, expected in (
        (["--train.epochs_classifier", "0"], "train.epochs_classifier must be at least 1, got 0"),
        (["--train.epochs_gates", "0"], "train.epochs_gates must be at least 1, got 0"),
        (["--train.epochs_gates", "-3"], "train.epochs_gates must be at least 1, got -3"),
        (["--train.batch_size", "1"], "train.batch_size must be at least 2, got 1"),
        (["--train.hidden_dim", "0"], "train.hidden_dim must be at least 1, got 0"),
        (["--train.lr_gates", "0"], "train.lr_gates must be a finite number above 0, got 0"),
        (["--train.weight_decay", "-1e-4"], "train.weight_decay must be a finite number of at least 0, got -0.0001"),
    ):
        with pytest.raises(ConfigError) as err:
            load_job(job_file, override)
        assert expected in str(err.value) and "job.yml" in str(err.value)
    load_job(job_file, ["--train.epochs_gates", "1", "--train.batch_size", "2", "--train.weight_decay", "0"])
    # the library function refuses the same settings (it is called without a job file too)
    feats, labels = _synthetic(n=16, dim=8)
    for config, expected in (
        (TrainConfig(epochs_classifier=0, hidden_dim=8), "train.epochs_classifier"),
        (TrainConfig(epochs_gates=0, hidden_dim=8), "train.epochs_gates"),
        (TrainConfig(batch_size=1, hidden_dim=8), "train.batch_size"),
        (TrainConfig(lr=float("inf"), hidden_dim=8), r"train.lr must be a finite number above 0, got inf"),
        (TrainConfig(beta=float("nan"), hidden_dim=8), r"train.beta must be a finite number above 0, got nan"),
        (TrainConfig(loss="hinge", hidden_dim=8), r"train.loss must be one of softmax, bce, got 'hinge'"),
    ):
        with pytest.raises(ConfigError, match=expected):
            train_head(feats, labels, COARSE_TO_FINE, config)
    one = np.zeros_like(labels)
    one[3, 0] = 1  # a single labelled video: no mini-batch of two for BatchNorm
    with pytest.raises(DatasetError, match="1 video with labels; training needs at least 2"):
        train_head(feats, one, COARSE_TO_FINE, TrainConfig(epochs_classifier=1, epochs_gates=1, hidden_dim=8))


def test_every_reported_loss_is_finite_and_from_trained_batches():
    feats, labels = _synthetic(n=21, dim=8)  # 21 = 2 * 10 + 1: the last batch of one is left out
    log = []
    train_head(
        feats,
        labels,
        COARSE_TO_FINE,
        TrainConfig(epochs_classifier=2, epochs_gates=2, batch_size=10, hidden_dim=8),
        on_epoch=lambda s, e, loss, m: log.append((s, e, loss)),
    )
    assert [(s, e) for s, e, _ in log] == [("classifier", 0), ("classifier", 1), ("gates", 0), ("gates", 1)]
    assert all(np.isfinite(loss) and loss > 0 for *_, loss in log)


def test_diverging_training_is_refused_naming_the_stage(anet, checkpoint, tmp_path):
    from frameexit.errors import FrameExitError
    from frameexit.train import TrainingError

    feats, labels = _synthetic(n=40, dim=16)
    small = {"epochs_classifier": 2, "epochs_gates": 2, "hidden_dim": 16, "batch_size": 8}
    with pytest.raises(TrainingError, match=r"stage 1 \(classifiers\).*epoch 1 of 2.*train\.lr \(1e\+30\)"):
        train_head(feats, labels, COARSE_TO_FINE, TrainConfig(lr=1e30, **small))
    with pytest.raises(TrainingError, match=r"stage 2 \(gates\).*epoch 1 of 2.*train\.lr_gates \(1e\+30\)"):
        train_head(feats, labels, COARSE_TO_FINE, TrainConfig(lr_gates=1e30, **small))
    bad = feats.copy()
    bad[[4, 9], 2, 0] = np.nan
    bad[11, 0, 1] = np.inf
    with pytest.raises(TrainingError, match=r"non-finite values in the features of 3 videos \(rows 4, 9, 11\)"):
        train_head(bad, labels, COARSE_TO_FINE, TrainConfig(**small))
    assert issubclass(TrainingError, FrameExitError)
    # through the job: the error names the stage and no checkpoint is written
    out = tmp_path / "diverged.pth"
    job = _train_job(anet, checkpoint, tmp_path, "--train.lr", "1e30")
    with pytest.raises(TrainingError, match=r"stage 1 \(classifiers\)"):
        train(job, str(out), extract_options=ExtractOptions(cache_root=str(tmp_path / "cache")))
    assert not out.exists()


def test_training_leaves_the_callers_random_state_alone_and_repeats_bit_for_bit():
    feats, labels = _synthetic()
    config = TrainConfig(epochs_classifier=2, epochs_gates=2, hidden_dim=32)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = train_head(feats, labels, COARSE_TO_FINE, config)
    assert torch.equal(torch.get_rng_state(), before)
    b = train_head(feats, labels, COARSE_TO_FINE, config)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_batchnorm_recalibration_is_the_average_over_the_batches():
    from frameexit.train import recalibrate_batchnorm

    torch.manual_seed(0)
    pre = torch.nn.Linear(3, 4)
    bn = torch.nn.BatchNorm1d(4)
    x = torch.randn(10, 3) * 5 + 2
    chunks = [torch.arange(0, 4), torch.arange(4, 8), torch.arange(8, 10)]
    bn.eval()
    recalibrate_batchnorm(bn, lambda b: bn(pre(x[b])), chunks)
    with torch.no_grad():
        h = [pre(x[c]) for c in chunks]
    # cumulative average of the per-batch mean and unbiased variance (what eval mode then uses)
    assert torch.allclose(bn.running_mean, torch.stack([v.mean(0) for v in h]).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, torch.stack([v.var(0, unbiased=True) for v in h]).mean(0), atol=1e-6)
    assert not bn.training and bn.momentum == 0.1 and pre.training


def test_classification_losses_by_hand():
    """Stage 1's loss and the loss behind the pseudo-labels: softmax CE on the normalised multi-hot target, or
    the mean BCE over classes (multi-label data, HVU's default); NaN for a video without labels."""
    import math

    from frameexit.train import classification_loss

    logits = torch.tensor([[2.0, 0.0, -1.0], [2.0, 0.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    log_z = math.log(math.exp(2) + 1 + math.exp(-1))
    softmax = 0.5 * (log_z - 2) + 0.5 * (log_z + 1)
    bce = (math.log(1 + math.exp(-2)) + math.log(2) + math.log(1 + math.exp(1))) / 3
    for kind, expected in (("softmax", softmax), ("bce", bce)):
        loss = classification_loss(logits, labels, kind)
        assert float(loss[0]) == pytest.approx(expected, rel=1e-12) and math.isnan(float(loss[1])), kind
    assert softmax == pytest.approx(1.66984, abs=1e-5) and bce == pytest.approx(0.711112, abs=1e-6)
