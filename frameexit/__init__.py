"""FrameExit, the method: frame sampling and order, preprocessing, backbones, the head,
checkpoints, the exit rule, metrics, cost, and sequential early-exit inference.

Pure computation: no file formats beyond checkpoints, no schedulers, no progress bars.
"""

__version__ = "0.1.0"
