"""SEMANTICS 3 + 6: sequential early exit reads only the frames it needs and equals the full computation."""

import numpy as np
import pytest
import torch
from helpers import load_fixture
from oracles import exit_steps

from frameexit.checkpoint import build_model, read_state_dict
from frameexit.inference import infer_video
from frameexit.preprocess import Preprocessing
from frameexit.sampling import COARSE_TO_FINE, sample_indices
from jobs.frames import read_frame

PRE = Preprocessing()


@pytest.fixture(scope="module")
def setup(anet, checkpoint):
    ds = load_fixture(anet)
    model = build_model(read_state_dict(checkpoint), backbone_name="torchvision.resnet18")
    frames, full = {}, {}
    for v in ds.videos:
        idx = sample_indices(len(v.frames))
        frames[v.key] = torch.stack([read_frame(v.frames[i], PRE) for i in idx])  # temporal order
        full[v.key] = _full(model, frames[v.key])
    return model, frames, full


def _full(model, clip):
    """Every step computed, frame by frame through the backbone, then the head on all ten."""
    with torch.no_grad():
        feats = torch.cat([model.backbone(clip[j][None]) for j in COARSE_TO_FINE])[None]
        probs, gates = model.exit_tables(feats)
    return probs[0].numpy(), gates[0].numpy()


def _run(model, clip, ft, gt):
    reads = []

    def reader(position):
        reads.append(position)
        return clip[position]

    return infer_video(model, reader, COARSE_TO_FINE, first_threshold=ft, gate_threshold=gt), reads


@pytest.mark.parametrize("ft", [0.0, 0.57, 1.0])
@pytest.mark.parametrize("gt", [0.0, 0.025, 0.1, 0.5, 1.0])
def test_sequential_equals_full_computation_and_reads_only_needed_frames(setup, ft, gt):
    model, frames, full = setup
    for key, clip in frames.items():
        probs, gates = full[key]
        expected = exit_steps(probs[None, 0].max(1), gates[None], ft, gt)[0]
        decision, reads = _run(model, clip, ft, gt)
        assert decision.exit_step == expected, key
        assert reads == list(COARSE_TO_FINE[: expected + 1]), key  # frames after the exit are never read
        assert decision.prediction == int(probs[expected].argmax())
        # the head sees one row at a time here and ten there; computed in float64, its float32
        # outputs are the same bits either way
        assert decision.confidence == float(probs[expected].max())
        np.testing.assert_array_equal(decision.probs, probs[expected])
        assert decision.probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_exit_steps_spread_over_the_fixture(setup):
    model, frames, _ = setup
    exits = {_run(model, clip, 0.57, 0.025)[0].exit_step for clip in frames.values()}
    assert len(exits) >= 2  # the random checkpoint is not degenerate: the tests above mean something


def test_boundaries_with_the_values_inference_computes(setup):
    model, frames, _ = setup
    clip = next(iter(frames.values()))
    conf0 = _run(model, clip, 0.0, 0.5)[0].confidence  # exits at step 0 with its own confidence
    assert _run(model, clip, conf0, 1.0)[0].exit_step == 1  # equal: no exit at 0 (strict), gate 1 fires
    below = float(np.nextafter(np.float32(conf0), np.float32(0)))
    assert _run(model, clip, below, 1.0)[0].exit_step == 0
    with torch.no_grad():
        z0 = model.project(model.backbone(clip[COARSE_TO_FINE[0]][None]))
        z1 = torch.maximum(z0, model.project(model.backbone(clip[COARSE_TO_FINE[1]][None])))
        s1 = model.gate(1, z1, z0).item()
    assert _run(model, clip, 1.0, s1)[0].exit_step > 1  # s_1 == gate_threshold: continue
    above = float(np.nextafter(np.float32(s1), np.float32(1)))
    assert _run(model, clip, 1.0, above)[0].exit_step == 1
