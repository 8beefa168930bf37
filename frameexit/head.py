"""The FrameExit network on top of the per-frame backbone (SEMANTICS 5).

Module names follow the official model, so ``state_dict()`` keys are those of
the released checkpoints (without the ``module.`` prefix of ``DataParallel``):
``backbone.<i>.*``, ``mlp.layers.{0,1}.*``, ``exit_selector.<g>.*``,
``classifiers.<t>.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .train_config import HEAD_PRECISION, HIDDEN_DIM

NUM_STEPS = 10

#: The head computes in float64 and rounds its outputs to float32. A float32 matrix product's
#: rounding depends on how the library splits the work (one row in sequential inference, thousands
#: in replay), so the same video would get slightly different probabilities in the two paths; the
#: float32 rounding of a float64 result is, all but always, the same whatever the split.
HEAD_DTYPE = getattr(torch, HEAD_PRECISION)


class Projection(nn.Module):
    """``h = ReLU(BatchNorm1d(Linear(feat_dim -> hidden_dim)(x)))``, as ``mlp.layers.{0,1,2}`` (the ReLU in place: one
    fewer copy of every frame's projection)."""

    def __init__(self, feat_dim: int, hidden_dim: int = HIDDEN_DIM):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(feat_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class Gate(nn.Module):
    """Exit gate: a shared two-layer branch on ``z_t`` and ``z_{t-1}``, concatenated, linear, sigmoid.

    The branch uses 1x1 convolutions on a ``hidden_dim x 1 x 1`` map, as the
    official code does, so the arithmetic (and the checkpoint keys) match it.
    """

    def __init__(self, hidden_dim: int = HIDDEN_DIM):
        super().__init__()
        self.conv1 = nn.Conv2d(hidden_dim, 128, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(128)
        self.conv2 = nn.Conv2d(128, 64, kernel_size=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.linear = nn.Linear(128, 1)

    def branch(self, z: torch.Tensor) -> torch.Tensor:
        """The branch on ``z`` (n, hidden_dim) -> (n, 64). Training runs the official 1x1 convolutions (its gradients
        and rounding, as the heads trained so far); inference and replay run them as the matrix products they are
        (the convolution kernel ran the head's float64 gates at a third of the GEMM rate), one path for both."""
        if torch.is_grad_enabled():
            x = F.relu(self.bn1(self.conv1(z[:, :, None, None])))
            return F.relu(self.bn2(self.conv2(x))).flatten(1)
        x = F.linear(z, self.conv1.weight.flatten(1), self.conv1.bias)
        x = F.relu(self.bn1(x[:, :, None, None])).flatten(1)
        x = F.linear(x, self.conv2.weight.flatten(1), self.conv2.bias)
        return F.relu(self.bn2(x[:, :, None, None])).flatten(1)

    def forward(self, z_t: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
        """``s_t`` of shape (n,), probabilities in [0, 1]; in the released checkpoints 1 means *continue*."""
        both = torch.cat([self.branch(z_t), self.branch(z_prev)], dim=1)
        return torch.sigmoid(self.linear(both))[:, 0]


class FrameExit(nn.Module):
    """Backbone (optional), projection, accumulated max pooling, ``num_steps`` classifiers and ``num_steps - 1`` gates.

    ``backbone``: the truncated feature network of one step (a frame, or a clip for a 3D backbone) to a vector of
    ``feat_dim`` (2048 for ResNet-50); ``None`` for a head that runs on cached features. ``num_steps``: ``T``, the
    largest number of frames read per video.
    """

    def __init__(
        self,
        backbone: nn.Module | None,
        feat_dim: int,
        num_class: int,
        num_steps: int = NUM_STEPS,
        hidden_dim: int = HIDDEN_DIM,
    ):
        super().__init__()
        self.backbone = backbone
        self.mlp = Projection(feat_dim, hidden_dim)
        self.exit_selector = nn.ModuleList(Gate(hidden_dim) for _ in range(num_steps - 1))
        self.classifiers = nn.ModuleList(nn.Linear(hidden_dim, num_class) for _ in range(num_steps))

    def set_head_dtype(self, dtype: torch.dtype = HEAD_DTYPE) -> FrameExit:
        """Compute the head (projection, gates, classifiers) in ``dtype``; the backbone is untouched."""
        for module in (self.mlp, self.exit_selector, self.classifiers):
            module.to(dtype)
        return self

    @property
    def head_dtype(self) -> torch.dtype:
        return self.mlp.layers[0].weight.dtype

    @property
    def num_steps(self) -> int:
        return len(self.classifiers)

    @property
    def num_class(self) -> int:
        return self.classifiers[0].out_features

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Per-frame projection ``h``: (n, feat_dim) -> (n, hidden_dim), in the head's dtype."""
        return self.mlp(features.to(self.head_dtype))

    @staticmethod
    def pool(h: torch.Tensor, z_prev: torch.Tensor | None) -> torch.Tensor:
        """``z_t = max(z_{t-1}, h_t)`` (``h`` at the first step): accumulated max pooling, one step."""
        return h if z_prev is None else torch.maximum(z_prev, h)

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        """``z_t`` of every step at once: (n_videos, n_steps, feat_dim) features in policy order ->
        (n_videos, n_steps, hidden_dim), equal to :meth:`project` and :meth:`pool` step by step (max is exact)."""
        n, steps, dim = features.shape
        h = self.project(features.reshape(n * steps, dim)).reshape(n, steps, -1)
        if torch.is_grad_enabled():  # training: cummax has a gradient
            return torch.cummax(h, dim=1).values
        # in place, one step after the other: cummax's strided pass and int64 indices took a third of the head pass
        for t in range(1, steps):
            torch.maximum(h[:, t - 1], h[:, t], out=h[:, t])
        return h

    def probs(self, step: int, z: torch.Tensor) -> torch.Tensor:
        """``softmax(logits_step(z_t))`` computed in the head's dtype, rounded to float32: (n, num_class)."""
        return F.softmax(self.logits(step, z), dim=1).float()

    def logits(self, step: int, z: torch.Tensor) -> torch.Tensor:
        """Classifier ``step`` on pooled features ``z_t``: (n, hidden_dim) -> (n, num_class)."""
        return self.classifiers[step](z)

    def gate(self, step: int, z_t: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
        """``s_t`` for ``step`` in 1..T-1 (gate ``step - 1``): probabilities of shape (n,)."""
        return self.exit_selector[step - 1](z_t, z_prev)

    def exit_tables(
        self, features: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything any exit threshold needs, of ``features`` (n_videos, n_steps, feat_dim) in policy order.

        Returns ``probs`` (n_videos, n_steps, num_class) float32, :meth:`probs` of every step, and ``gates``
        (n_videos, n_steps - 1) float32, ``s_t`` for steps 1..T-1 (column ``t - 1``); the last column belongs
        to the final step, where a video always exits, and is only informative. ``out``: float32 tensors of
        those shapes to write them into (a view of a larger table: no copy of the tables afterwards).
        """
        z = self.pooled(features)
        n, steps = z.shape[:2]
        if out is None:
            out = (
                z.new_empty((n, steps, self.num_class), dtype=torch.float32),
                z.new_empty((n, steps - 1), dtype=torch.float32),
            )
        probs, gates = out
        for t in range(steps):
            # copy_ rounds float64 to float32 as .float() does
            probs[:, t].copy_(F.softmax(self.logits(t, z[:, t]), dim=1))
            if t:
                gates[:, t - 1].copy_(self.gate(t, z[:, t], z[:, t - 1]))
        return probs, gates
