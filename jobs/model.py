"""Building a FrameExit model from a job and its checkpoint, with every mismatch named."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import torch

from frameexit.backbone import feature_dim, pretrained_state_dict
from frameexit.checkpoint import BACKBONE, HeadShape, backbone_digest, build_model, head_shape, read_checkpoint
from frameexit.cost import measure_step_costs, paper_per_frame
from frameexit.errors import CheckpointError, ConfigError
from frameexit.head import FrameExit
from frameexit.step_costs import StepCosts

from .config import Job
from .replay_inputs import check_head_sizes


def resolve_device(device: str, *, option_name: str = "--device") -> torch.device:
    """``'auto'`` is CUDA when available, else CPU; ``'cuda'`` without a GPU is an error (naming ``option_name``)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{option_name} {device} was asked for, but torch sees no CUDA device")
    return torch.device(device)


def check_state(job: Job, state: Mapping[str, torch.Tensor], path: str) -> None:
    """Raise if the checkpoint's head does not fit the job (classes, steps, feature length)."""
    shape = head_shape(state, path=path)
    check_head_sizes(job, path, shape.num_class, shape.num_steps, shape.feat_dim)


def check_backbone_dim(job: Job) -> None:
    """Raise unless the configured backbone really gives ``model.backbone.output_dim`` features."""
    model_cfg = job.model
    dim = feature_dim(
        model_cfg.backbone_name,
        truncate_modules=model_cfg.truncate_modules,
        input_size=job.data.preprocessing.crop,
        clip_length=model_cfg.clip_length if model_cfg.clips else None,
    )
    if dim != model_cfg.output_dim:
        raise ConfigError(
            f"{job.source}: {model_cfg.backbone_name} truncated at {model_cfg.truncate_modules} gives "
            f"{dim}-d features but model.backbone.output_dim is {model_cfg.output_dim}"
        )


def checkpoint_state(job: Job, checkpoint: str) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, checked against the job, with backbone weights (see :func:`checkpoint_file`)."""
    return checkpoint_file(job, checkpoint)[0]


def checkpoint_file(job: Job, checkpoint: str, content: bytes | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The checkpoint's state dict, checked against the job, with backbone weights; and the SHA-256 of the
    checkpoint file, from the bytes the state was read from (the file is read once; ``content``: its bytes, when
    already read).

    The backbone comes from the checkpoint when it has one (the released ones do, fine-tuned); otherwise from
    the published weights already on disk if ``model.backbone.pretrained`` is true. Nothing is downloaded.
    """
    check_backbone_dim(job)
    state, sha256 = read_checkpoint(checkpoint, content)
    check_state(job, state, checkpoint)
    if not any(k.startswith(BACKBONE) for k in state):
        model_cfg = job.model
        if not model_cfg.pretrained:
            raise CheckpointError(
                f"checkpoint {checkpoint} has no backbone weights and model.backbone.pretrained is False"
            )
        backbone = pretrained_state_dict(model_cfg.backbone_name, truncate_modules=model_cfg.truncate_modules)
        state = {**{BACKBONE + k: v for k, v in backbone.items()}, **state}
    return state, sha256


def backbone_geometry(job: Job) -> dict[str, int | None]:
    """``clip_length`` and ``input_size`` of the job's backbone input, as :mod:`frameexit.backbone` takes them: a 3D
    backbone is built for the clip it will see (its head averages over a whole clip); ``None`` for a 2D one."""
    if not job.model.clips:
        return {"clip_length": None, "input_size": None}
    return {"clip_length": job.model.clip_length, "input_size": job.data.preprocessing.crop}


def paper_per_step(job: Job) -> float | None:
    """The paper-convention cost of one of the job's steps (:func:`frameexit.cost.paper_per_frame` of its
    backbone at its clip geometry): ``None`` where the paper has no figure for them."""
    return paper_per_frame(job.model.backbone_name, **backbone_geometry(job))


def load_model(job: Job, checkpoint: str, device: torch.device) -> tuple[FrameExit, str]:
    """The job's model with the checkpoint's weights (see :func:`checkpoint_file`), in eval mode on ``device``;
    and the SHA-256 of the checkpoint file, from the bytes the weights were read from."""
    state, sha256 = checkpoint_file(job, checkpoint)
    model = build_model(
        state,
        backbone_name=job.model.backbone_name,
        truncate_modules=job.model.truncate_modules,
        path=os.fspath(checkpoint),
        **backbone_geometry(job),
    )
    return model.to(device), sha256


def step_costs(job: Job, hidden_dim: int) -> StepCosts:
    """Measured GMACs of each part of the job's model with a head ``hidden_dim`` wide, at the job's input size
    (a frame, or a clip of ``model.backbone.clip_length`` frames for a 3D backbone)."""
    return measure_step_costs(
        job.model.backbone_name,
        input_size=job.data.preprocessing.crop,
        num_class=job.model.num_class,
        truncate_modules=job.model.truncate_modules,
        hidden_dim=hidden_dim,
        clip_length=job.model.clip_length if job.model.clips else None,
    )


class LazyModel:
    """A model that dask tasks share, built on first use and kept on the instance: one build per process.

    A worker deserializes a scattered object once and hands that same instance to each of its tasks, so no
    module-level cache can hand out another checkpoint's model; threads share it (a lock). It pickles only
    :attr:`TRAVELS`. Subclasses define :meth:`build`, called by :meth:`built` with the key of what they need (the
    device: a model built for another key is replaced).
    """

    #: The attributes that travel with the object to a dask worker.
    TRAVELS: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._built: tuple[str, Any] | None = None
        self._lock = threading.Lock()

    def build(self, key: str) -> Any:
        raise NotImplementedError

    def built(self, key: str = "") -> Any:
        """The model for ``key``, built on first use; threads of one process share it."""
        with self._lock:
            if self._built is None or self._built[0] != key:
                self._built = (key, self.build(key))
            return self._built[1]

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.TRAVELS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        LazyModel.__init__(self)


class HeadState(LazyModel):
    """One checkpoint's head weights (float32 as stored, without ``backbone.*``) as one object for dask, and the
    head built from them once per process (:class:`LazyModel`); ``name``: the checkpoint, named in errors. dask
    takes a dict apart: ``client.scatter(dict)`` makes one future per key, *named by the key*, so the heads
    of several checkpoints (which share every parameter name) overwrote each other on the workers. An instance
    travels whole, under a key of its own (the built head, twice its size in float64, is made again there).
    """

    TRAVELS = ("name", "sha256", "state")

    def __init__(self, name: str, sha256: str, state: dict[str, torch.Tensor], digest: str | None = None):
        super().__init__()
        self.name, self.sha256 = name, sha256
        # what the replay checks and records of the checkpoint (not needed where the head runs: they stay here)
        self.backbone_digest: str = digest or backbone_digest(state)
        self.shape: HeadShape = head_shape(state, path=name)
        self.state = {k: v for k, v in state.items() if not k.startswith(BACKBONE)}

    @property
    def hidden_dim(self) -> int:
        """Width of the projection (4096 in the released checkpoints)."""
        return int(self.state["mlp.layers.0.weight"].shape[0])

    def model(self, device: str = "cpu") -> FrameExit:
        """The head in eval mode (float64) on ``device`` (``cpu``, ``cuda:N``), built on first use; threads of one
        process share it."""
        return self.built(device)

    def build(self, key: str) -> FrameExit:
        return build_model(self.state, backbone_name=None, path=self.name).to(torch.device(key or "cpu"))

    def __repr__(self) -> str:
        return f"HeadState({self.name!r}, sha256={self.sha256[:12]}...)"
