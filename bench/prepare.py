"""A rerun of `frameexit prepare frames` with nothing to do, at dataset scale.

Builds a videos folder of N files (empty: a rerun opens none) and a frames folder
where every one of them is finished (a folder with one JPEG each), then times the
whole command, interpreter start included, a few times, and checks in a separate
interpreter that the command imports no torch.

    .venv/bin/python bench/prepare.py [--videos 10000] [--runs 3] [--keep DIR]

Target (DESIGN.md): under 2 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.join(os.path.dirname(sys.executable), "frameexit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000, help="finished videos (Mini-Kinetics val: 9,867)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", help="build the folders here and keep them")
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="frameexit-bench-prepare-")
    videos, frames = os.path.join(root, "videos"), os.path.join(root, "frames")
    try:
        os.makedirs(videos, exist_ok=True)
        for i in range(args.videos):
            open(os.path.join(videos, f"v_{i:06d}.mp4"), "wb").close()
            os.makedirs(os.path.join(frames, f"v_{i:06d}.mp4"), exist_ok=True)
            open(os.path.join(frames, f"v_{i:06d}.mp4", "img_00001.jpeg"), "wb").close()
        command = [EXE, "prepare", "frames", videos, frames, "--dataset", "minikinetics"]
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - start)
        assert f"{args.videos} already done" in out.stdout, out.stdout
        code = f"import sys, cli\nsys.argv = {command!r}\ntry:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        code += "print('torch' in sys.modules, file=sys.stderr)"
        torch = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"rerun with nothing to do, {args.videos} videos: " + ", ".join(f"{t:.2f} s" for t in times))
        print(f"median {statistics.median(times):.2f} s (target < 2 s); torch imported: {torch.stderr.strip()}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
