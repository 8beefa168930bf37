"""SEMANTICS 3 + 6: sequential early exit reads only the frames it needs and equals the full computation, under
every exit policy (frameexit.policies)."""

import numpy as np
import pytest
import torch
from helpers import load_fixture
from oracles import exit_steps

from frameexit.checkpoint import build_model, read_state_dict
from frameexit.errors import ThresholdError
from frameexit.head import FrameExit
from frameexit.inference import infer_video
from frameexit.policies import PolicySetting, policy_exit_steps
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


# ---------------------------------------------------------------------------------------------- exit policies

# class probabilities of each step of a scripted model (4 steps, 4 classes), exact in float32; the top class is
# 0, 1, 2, 0 and its probability 0.5, 0.75, 0.8125, 0.875
SCRIPT = [
    [0.5, 0.25, 0.125, 0.125],
    [0.125, 0.75, 0.125, 0.0],
    [0.0625, 0.0625, 0.8125, 0.0625],
    [0.875, 0.0625, 0.0625, 0.0],
]
ORDER = (2, 0, 3, 1)  # step t reads sampled frame ORDER[t]


class Scripted:
    """A model whose step t has the class probabilities ``script[t]`` whatever it reads; it records the steps whose
    probabilities are computed, and has no gates (the baseline policies never compute one)."""

    pool = staticmethod(FrameExit.pool)

    def __init__(self, script):
        self.table = torch.tensor(script, dtype=torch.float32)
        self.computed = []

    def backbone(self, frame):
        return frame.reshape(1, -1)

    def project(self, features):
        return features

    def probs(self, step, z):
        self.computed.append(step)
        return self.table[step][None]

    def gate(self, step, z_t, z_prev):
        raise AssertionError("a baseline policy computed a gate")


def _scripted(script=SCRIPT, **policy):
    """``infer_video`` of the scripted model under ``policy``: the decision, the positions read, the steps whose
    probabilities were computed."""
    model, reads = Scripted(script), []

    def reader(position):
        reads.append(position)
        return torch.zeros(3, 1, 1)

    decision = infer_video(model, reader, ORDER[: len(script)], **policy)
    return decision, reads, model.computed


def _expect(decision, step, script=SCRIPT):
    probs = np.array(script[step], dtype=np.float32)
    assert decision.exit_step == step
    assert decision.prediction == int(probs.argmax()) and decision.confidence == float(probs.max())
    np.testing.assert_array_equal(decision.probs, probs)


@pytest.mark.parametrize(
    ("tau", "step"),
    [
        (0.4, 0),
        (0.5, 1),  # step 0's top probability is 0.5: equal does not exit (strict)
        (float(np.nextafter(np.float32(0.75), np.float32(0))), 1),  # the float32 just below 0.75 does
        (0.75, 2),
        (0.8125, 3),  # equal at step 2, and step 3 is the last: it exits there
        (0.9, 3),  # never above: the last step exits
        (1.0, 3),
        (0.0, 0),
    ],
)
def test_confidence_exits_at_the_first_step_strictly_above_tau_and_reads_no_further(tau, step):
    decision, reads, computed = _scripted(policy="confidence", tau=tau)
    _expect(decision, step)
    assert reads == list(ORDER[: step + 1])  # frames after the exit are never read
    assert computed == list(range(step + 1))  # each step's probabilities decide it


def test_confidence_compares_in_float32():
    # 0.6 is 0.60000002 in float32: a step whose top probability is float32(0.6) is not above tau = 0.6, though
    # it is above the double 0.6 (the rule of step 0, exit_rule.first_step_exits)
    script = [[0.6, 0.2, 0.1, 0.1], [0.125, 0.75, 0.125, 0.0]]
    assert float(np.float32(0.6)) > 0.6
    decision, reads, _ = _scripted(script, policy="confidence", tau=0.6)
    _expect(decision, 1, script)
    decision, reads, _ = _scripted(script, policy="confidence", tau=0.59999)
    _expect(decision, 0, script)
    assert reads == [ORDER[0]]


@pytest.mark.parametrize("frames", [1, 2, 3, 4])
def test_fixed_reads_its_frames_and_computes_one_classifier(frames):
    decision, reads, computed = _scripted(policy="fixed", frames=frames)
    _expect(decision, frames - 1)
    assert reads == list(ORDER[:frames])
    assert computed == [frames - 1]  # the probabilities of the exit step only: the others decide nothing


@pytest.mark.parametrize(
    ("labels", "step"),
    [
        ([0], 0),  # right at steps 0 and 3: the earliest
        ([1], 1),
        ([2, 3], 2),  # multi-label, right at step 2 only (class 3 is never the top one)
        ([3], 0),  # never right: step 0
        ([], 0),  # no label: step 0
    ],
)
def test_oracle_exits_at_the_earliest_right_step_after_running_every_step(labels, step):
    decision, reads, computed = _scripted(policy="oracle", labels=labels)
    _expect(decision, step)
    assert reads == list(ORDER) and computed == [0, 1, 2, 3]  # it must know whether any step is right


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (dict(policy="confidence"), r"tau must be in \[0, 1\]"),
        (dict(policy="confidence", tau=1.5), r"tau must be in \[0, 1\] \(a probability\), got 1.5"),
        (dict(policy="confidence", tau=float("nan")), r"tau must be in \[0, 1\]"),
        (dict(policy="fixed"), r"frames must be an integer in 1..4"),
        (dict(policy="fixed", frames=0), r"frames must be an integer in 1..4 .*got 0"),
        (dict(policy="fixed", frames=5), r"frames must be an integer in 1..4 .*got 5"),
        (dict(policy="fixed", frames=2, tau=0.5), "tau is the confidence policy's threshold, not the fixed"),
        (dict(policy="oracle", frames=2), "frames is the fixed policy's setting, not the oracle"),
        (dict(policy="frameexit"), "the frameexit policy needs first_threshold"),
        (dict(policy="gates"), "unknown exit policy 'gates': expected one of frameexit, confidence, fixed, oracle"),
    ],
)
def test_a_policy_without_its_setting_is_refused_before_any_frame_is_read(policy, message):
    with pytest.raises(ThresholdError, match=message):
        _scripted(**policy)


@pytest.fixture(scope="module")
def labels(anet):
    return {v.key: list(v.labels) for v in load_fixture(anet).videos}


def test_every_policy_equals_its_grid_form_over_the_full_computation(setup, labels):
    model, frames, full = setup
    # tau: a video's own step-0 top probability (equal: it does not exit there); the ends (tau 0 and 1, 1 and 10
    # frames) are the scripted model's above: each setting here runs six videos
    tau = float(np.median([full[key][0][0].max() for key in sorted(frames)[:5]]))
    settings = [PolicySetting("confidence", tau=tau), PolicySetting("fixed", frames=4), PolicySetting("oracle")]
    exits = set()
    for i, (key, clip) in enumerate(frames.items()):
        probs, _ = full[key]
        top, predictions = probs.max(axis=1), probs.argmax(axis=1)
        # the random head is never right about the fixture's labels: the oracle is given a video's top class at
        # some step as its label, with its own labels (right at several steps, or never: no label)
        label = [*labels[key], int(predictions[(3 * i) % 10])] if i % 3 else labels[key]
        hits = np.isin(predictions, label)
        expected = policy_exit_steps(settings, top[None], hits[None])[:, 0]
        for setting, step in zip(settings, expected, strict=True):
            reads = []

            def reader(position, _reads=reads, _clip=clip):
                _reads.append(position)
                return _clip[position]

            own = {"tau": setting.tau} if setting.policy == "confidence" else {"frames": setting.frames}
            own = {"labels": label} if setting.policy == "oracle" else own
            decision = infer_video(model, reader, COARSE_TO_FINE, policy=setting.policy, **own)
            assert decision.exit_step == step, (key, setting)
            read = 10 if setting.policy == "oracle" else step + 1
            assert reads == list(COARSE_TO_FINE[:read]), (key, setting)
            np.testing.assert_array_equal(decision.probs, probs[step])  # bit for bit
            exits.add((setting.policy, int(step)))
    # the random checkpoint is not degenerate: videos exit at different steps under confidence and oracle
    assert len({step for policy, step in exits if policy == "confidence"}) >= 2
    assert len({step for policy, step in exits if policy == "oracle"}) >= 2
