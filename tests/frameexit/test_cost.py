"""SEMANTICS 8: paper-convention GFLOPs, measured GMACs, exit histogram."""

import math

import numpy as np
import pytest
from oracles import paper_gflops, video_gmacs

from frameexit.cost import StepCosts, exit_histogram, measure_step_costs, paper_per_frame


def test_paper_convention():
    assert paper_per_frame("torchvision.resnet50") == 4.12
    assert paper_per_frame("efficientnet_b3") == 1.8
    assert paper_per_frame("torchvision.resnet18") is None  # the official code charges 0
    # exits at steps 0, 1, 9 read 1, 2, 10 frames: mean 13/3 frames x 4.12
    assert paper_gflops([0, 1, 9], 4.12) == pytest.approx(13 / 3 * 4.12)
    assert paper_gflops([9, 9], 4.12) == pytest.approx(41.2)  # "w/o exit" row of the paper
    assert math.isnan(paper_gflops([0, 1], None))


def test_measured_gmacs_of_resnet50_head_parts_hand_computed():
    c = measure_step_costs("torchvision.resnet50", input_size=224, num_class=200)
    assert 4.0 < c.backbone < 4.2  # ResNet-50 at 224x224: about 4.09 GMACs
    assert c.projection == pytest.approx(2048 * 4096 / 1e9)
    assert c.classifier == pytest.approx(4096 * 200 / 1e9)
    # gate: branch (4096x128 + 128x64) twice, then 128x1
    assert c.gate == pytest.approx((2 * (4096 * 128 + 128 * 64) + 128) / 1e9)
    large = measure_step_costs("torchvision.resnet50", input_size=448, num_class=200)
    assert large.backbone == pytest.approx(4 * c.backbone)  # the actual input size counts: 4x the pixels


def test_video_gmacs_follows_the_steps_taken():
    c = StepCosts(backbone=1.0, projection=0.1, classifier=0.01, gate=0.001)
    # step 0: 1 frame + classifier 0; step 3: 4 frames + classifier 0 + 3 gates + classifier 3
    np.testing.assert_allclose(video_gmacs(c, [0, 3]), [1.1 + 0.01, 4 * 1.1 + 0.01 + 0.003 + 0.01])


def test_exit_histogram():
    h = exit_histogram([0, 0, 3, 9], 10)
    assert h.tolist() == [0.5, 0, 0, 0.25, 0, 0, 0, 0, 0, 0.25]
    assert exit_histogram([], 10).tolist() == [0.0] * 10


def test_mean_video_gmacs_is_the_mean_over_videos_of_the_exit_histogram():
    # replay knows each setting's exit histogram, not every video's exit: the mean must agree
    costs = StepCosts(backbone=4.1, projection=0.008, classifier=0.0008, gate=0.0005)
    exits = np.random.default_rng(0).integers(0, 10, size=1000)
    mean = costs.mean_video_gmacs(exit_histogram(exits, 10))
    assert mean == pytest.approx(video_gmacs(costs, exits).mean(), rel=1e-12)
    assert math.isnan(costs.mean_video_gmacs(exit_histogram([], 10)))


def test_each_policy_is_charged_what_its_sequential_reference_runs():
    """A video exiting at the last step ran no gate there (frameexit.inference stops without computing it); the
    confidence rule runs every step's classifier and no gate; fixed frames and the oracle one classifier."""
    gate_only, classifier_only = StepCosts(0, 0, 0, 1.0), StepCosts(0, 0, 1.0, 0)
    assert gate_only.step_gmacs(10).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 8]
    assert classifier_only.step_gmacs(10).tolist() == [1] + [2] * 9
    assert classifier_only.step_gmacs(10, "confidence").tolist() == list(range(1, 11))
    assert (
        classifier_only.step_gmacs(10, "fixed").tolist()
        == [1] * 10
        == classifier_only.step_gmacs(10, "oracle").tolist()
    )
    frames = StepCosts(2.0, 0.5, 0, 0)
    assert frames.step_gmacs(4, "fixed").tolist() == [2.5, 5.0, 7.5, 10.0]
