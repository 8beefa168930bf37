"""Reading and writing checkpoints in the official format (SEMANTICS 9).

The released checkpoints are ``torch.save`` of the state dict of
``nn.DataParallel(model)``: every key starts with ``module.``. We read them
with ``weights_only=True`` (no code runs from a checkpoint file), accept keys
with or without the prefix, and write the same format so that the official
code can load our checkpoints too.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .atomic import atomic_write
from .backbone import build_backbone
from .errors import CheckpointError
from .head import FrameExit
from .weights_file import refusal_reason

PREFIX = "module."
BACKBONE = "backbone."


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict stored in a checkpoint file, keys without the ``module.`` prefix (see :func:`read_checkpoint`)."""
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | os.PathLike, content: bytes | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict stored in a checkpoint file, keys without the ``module.`` prefix, and the SHA-256 of the
    file: both from the same bytes, read once (``content``: those bytes, when the caller has read them).

    Raises :class:`CheckpointError` naming the file if it is missing, unreadable, holds anything but tensors and
    containers (the message names the pickled objects and never advises loading it otherwise), is not a state
    dict, or holds NaN or infinite values (:func:`check_finite`).
    """
    path = os.fspath(path)
    if content is None and not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        if content is None:
            with open(path, "rb") as handle:
                content = handle.read()
        obj = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike for bad files
        raise CheckpointError(
            f"cannot load checkpoint {path} with weights_only=True: {refusal_reason(exc)}; "
            "a checkpoint must be a torch.save'd state dict of tensors"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict (a mapping of names to tensors)")
    state = {(k[len(PREFIX) :] if k.startswith(PREFIX) else k): v for k, v in obj.items()}
    check_finite(state, path=path)
    return state, hashlib.sha256(content).hexdigest()


def check_finite(state: Mapping[str, torch.Tensor], *, path: str = "(state dict)", action: str = "checkpoint") -> None:
    """Refuse a state dict with NaN or infinite weights: :class:`CheckpointError` ``<action> <path>: non-finite
    values in module.classifiers.3.weight (12 NaN), ...`` (keys shown with ``module.``, the first five).

    A diverged training run leaves such values; loading them would give
    predictions without meaning (NaN confidences never pass a threshold) rather
    than an error. Integer tensors (BatchNorm ``num_batches_tracked``) cannot hold them and are skipped.
    """
    found = [
        (key, int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum()))
        for key, tensor in state.items()
        # one reduction per tensor in the common case; counting only for the offending ones
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if not found:
        return
    limit = 5
    parts = []
    for key, n_nan, n_inf in found[:limit]:
        counts = ", ".join(f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "inf")) if n)
        parts.append(f"{key if key.startswith(PREFIX) else PREFIX + key} ({counts})")
    more = f", ... ({len(found) - limit} more tensors)" if len(found) > limit else ""
    raise CheckpointError(f"{action} {path}: non-finite values in {', '.join(parts)}{more}")


@dataclass(frozen=True)
class HeadShape:
    """Sizes of a FrameExit head read from a state dict."""

    feat_dim: int
    hidden_dim: int
    num_class: int
    num_steps: int
    has_backbone: bool


def head_shape(state: Mapping[str, torch.Tensor], *, path: str = "(state dict)") -> HeadShape:
    """Read the head's sizes from its state dict (keys without ``module.``)."""
    proj = state.get("mlp.layers.0.weight")
    cls0 = state.get("classifiers.0.weight")
    if proj is None or cls0 is None or proj.dim() != 2 or cls0.dim() != 2:
        missing = [k for k in ("mlp.layers.0.weight", "classifiers.0.weight") if k not in state]
        raise CheckpointError(
            f"{path} is not a FrameExit checkpoint: "
            + (f"missing key(s) {', '.join(PREFIX + k for k in missing)}" if missing else "unexpected shapes")
        )
    steps = 0
    while f"classifiers.{steps}.weight" in state:
        steps += 1
    return HeadShape(
        feat_dim=int(proj.shape[1]),
        hidden_dim=int(proj.shape[0]),
        num_class=int(cls0.shape[0]),
        num_steps=steps,
        has_backbone=any(k.startswith(BACKBONE) for k in state),
    )


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, path: str = "(state dict)", key_prefix: str = ""
) -> None:
    """Load ``state`` into ``model`` (which may live on the meta device), requiring an exact match.

    Raises :class:`CheckpointError` listing the missing and unexpected keys, or the keys whose shapes differ,
    with ``key_prefix`` before their names (``backbone.`` for a backbone alone).
    """
    expected = model.state_dict()
    named = PREFIX + key_prefix
    missing = sorted(named + k for k in set(expected) - set(state))
    unexpected = sorted(named + k for k in set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        raise CheckpointError(f"checkpoint {path} does not match the configured model; " + "; ".join(parts))
    wrong = [
        f"{named}{k} {tuple(state[k].shape)} (model {tuple(v.shape)})"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise CheckpointError(
            f"checkpoint {path} does not match the configured model; shapes differ: {'; '.join(wrong[:8])}"
            + (f" ... ({len(wrong) - 8} more)" if len(wrong) > 8 else "")
        )
    model.load_state_dict(dict(state), strict=True, assign=True)


def official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as the official code saves it: ``module.``-prefixed float32 CPU tensors."""
    return {
        PREFIX + k: (v.float() if v.is_floating_point() else v).detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
    }


def save_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` in the official checkpoint format, atomically.

    Raises :class:`CheckpointError` (and writes nothing) if any weight is NaN or
    infinite: such a file would be refused when it is read back.
    """
    state = official_state_dict(model)
    check_finite(state, path=os.fspath(path), action="refusing to write checkpoint")
    with atomic_write(path) as handle:
        torch.save(state, handle)


def backbone_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the backbone weights in a state dict (keys, dtypes, shapes and bytes, in key order).

    Two checkpoints share backbone features exactly when their digests are equal.
    """
    h = hashlib.sha256()
    for key in sorted(k for k in state if k.startswith(BACKBONE)):
        tensor = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def build_model(
    state: Mapping[str, torch.Tensor],
    *,
    backbone_name: str | None,
    truncate_modules: int = -1,
    path: str = "(state dict)",
    clip_length: int | None = None,
    input_size: int | None = None,
) -> FrameExit:
    """A FrameExit model in eval mode holding the weights of ``state`` (keys without ``module.``).

    ``backbone_name``: ``torchvision.<model>`` or ``pytorchvideo.x3d_s``; ``None`` builds the head alone (for
    cached features) and ignores the checkpoint's backbone weights. ``path`` is named in error messages;
    ``clip_length``, ``input_size``: the clip a 3D backbone will see (:func:`frameexit.backbone.build_backbone`).
    """
    shape = head_shape(state, path=path)
    backbone = None
    if backbone_name is None:
        state = {k: v for k, v in state.items() if not k.startswith(BACKBONE)}
    elif not shape.has_backbone:
        raise CheckpointError(f"checkpoint {path} has no backbone weights ({PREFIX}{BACKBONE}*)")
    else:
        backbone = build_backbone(
            backbone_name, truncate_modules=truncate_modules, clip_length=clip_length, input_size=input_size
        )
    with torch.device("meta"):
        model = FrameExit(backbone, shape.feat_dim, shape.num_class, shape.num_steps, shape.hidden_dim)
    load_state(model, state, path=path)
    return model.set_head_dtype().eval()


def build_backbone_from_state(
    state: Mapping[str, torch.Tensor],
    *,
    backbone_name: str,
    truncate_modules: int = -1,
    path: str = "(state dict)",
    clip_length: int | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """The truncated backbone alone, in eval mode, with the ``backbone.*`` weights of ``state``.

    ``clip_length`` and ``input_size``: the clip a 3D backbone will see (see :func:`build_model`).
    """
    weights = {k[len(BACKBONE) :]: v for k, v in state.items() if k.startswith(BACKBONE)}
    if not weights:
        raise CheckpointError(f"checkpoint {path} has no backbone weights ({PREFIX}{BACKBONE}*)")
    backbone = build_backbone(
        backbone_name, truncate_modules=truncate_modules, clip_length=clip_length, input_size=input_size
    )
    load_state(backbone, weights, path=path, key_prefix=BACKBONE)
    return backbone.eval()
