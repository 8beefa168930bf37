"""What checking the frames against a cache's record costs at ActivityNet-validation scale.

``extract`` and ``run`` on an existing cache, and ``replay --verify-frames``, list
every frame folder of the split and read and hash every file the steps read
(:func:`jobs.frames.frames_records`), to compare with what the manifest recorded
when the features were computed. This script builds a frame tree of that shape
(default 4,926 videos, 120 frame files each as at 1 fps, the 10 sampled files of
each at 40 KB, like the official 350-pixel JPEGs, the others 1 byte: only their
names are listed), then times the listing and the reading-and-hashing, twice: the
first pass reads files just written (in the page cache, as on a machine that
prepared them); a later pass after the page cache is dropped (only as root, and
where the kernel allows it) reads from the disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from frameexit.sampling import sample_indices  # noqa: E402
from jobs.datasets import list_frames  # noqa: E402
from jobs.frames import frames_records  # noqa: E402


class Video:
    def __init__(self, key: str, frames: tuple[str, ...]):
        self.key, self.frames = key, frames


def build(root: str, n_videos: int, n_files: int, size: int) -> None:
    rng = np.random.default_rng(0)
    payload = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
    sampled = set(sample_indices(n_files, 10).tolist())
    for v in range(n_videos):
        folder = os.path.join(root, f"v_{v:011d}.mp4")
        os.makedirs(folder)
        for k in range(n_files):
            with open(os.path.join(folder, f"img_{k + 1:05d}.jpeg"), "wb") as f:
                f.write(
                    payload[: size - 8] + v.to_bytes(4, "little") + k.to_bytes(4, "little") if k in sampled else b"x"
                )


def drop_page_cache() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=4926)
    ap.add_argument("--files", type=int, default=120, help="frame files per video")
    ap.add_argument("--size", type=int, default=40_000, help="bytes of each sampled file")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-frames-")
    try:
        t0 = time.perf_counter()
        build(tmp, a.videos, a.files, a.size)
        print(
            f"built {a.videos} folders x {a.files} files ({a.videos * 10 * a.size / 1e9:.2f} GB sampled) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        for label in ("page cache", "after dropping the page cache"):
            if label.startswith("after") and not drop_page_cache():
                print("page cache could not be dropped here: no cold pass")
                break
            t0 = time.perf_counter()
            keys = sorted(os.listdir(tmp))
            videos = [Video(k, tuple(list_frames(tmp, k))) for k in keys]
            listed = time.perf_counter() - t0
            t0 = time.perf_counter()
            records = frames_records(videos, 10, progress=False)
            hashed = time.perf_counter() - t0
            assert len(records) == a.videos and all(records.values())
            print(
                f"{label}: listing {listed:.2f} s, reading and hashing the sampled files {hashed:.2f} s "
                f"({a.videos * 10 * a.size / hashed / 1e6:.0f} MB/s), total {listed + hashed:.2f} s"
            )
        print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
