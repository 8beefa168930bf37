"""The job keys of exit policies and the bootstrap: defaults, overrides and their errors (issue 22)."""

import pytest
from helpers import ANET_JOB

from frameexit.bootstrap import Bootstrap
from frameexit.errors import ConfigError
from frameexit.policies import POLICIES
from jobs.config import load_job, with_options


def test_defaults_replay_every_policy_with_the_first_grid_and_1000_resamples():
    job = load_job(ANET_JOB, ["--replay.first_thresholds", "[0.5, 0.9]"])
    assert job.replay.policies == POLICIES
    assert job.replay.confidence_thresholds == (0.5, 0.9)
    assert job.replay.bootstrap == Bootstrap(resamples=1000, level=0.95, seed=0)


def test_options_set_the_keys_frameexit_always_first():
    job = with_options(
        load_job(ANET_JOB),
        {"policies": ("oracle,fixed",), "confidence_thresholds": (0.7,), "resamples": 0, "level": 0.9, "seed": 3},
    )
    assert job.replay.policies == ("frameexit", "fixed", "oracle")
    assert job.replay.confidence_thresholds == (0.7,)
    assert job.replay.bootstrap == Bootstrap(resamples=0, level=0.9, seed=3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--replay.policies", "[gates]"], "replay.policies: unknown exit policy 'gates'"),
        (["--replay.bootstrap_resamples", "-1"], "replay.bootstrap_resamples must be an integer >= 0"),
        (["--replay.bootstrap_level", "1.5"], "replay.bootstrap_level must be a fraction in (0, 1)"),
        (["--replay.confidence_thresholds", "[0.5, 2]"], "confidence_thresholds"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_job(ANET_JOB, override)
