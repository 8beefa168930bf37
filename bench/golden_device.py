"""The golden check (``../shared/golden/check``: ``frameexit infer`` against the official code's decisions) on another
machine and device, for ``bench/device.sh``.

The check regenerates its fixture and refuses to compare when the fixture's digest differs from the one the official
code ran on. Another machine's Pillow encodes other JPEG bytes, so the frames made here (``--frames``: the fixture's
``frames`` and ``ann`` folders, copied by ``bench/device.sh --prepare``) replace the regenerated ones; the
checkpoint is made there from the same seed (float64 calibration, rounded to float32). Only when the digest then
equals the official fixture's is the check run, with ``frameexit infer --device DEVICE``; else this says which
digest differs and exits 2.

    python bench/golden_device.py GOLDEN_DIR --frames DIR [--device cuda]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_ARGS = ["--kind", "activitynet", "--backbone", "resnet18", "--videos", "24", "--seed", "3"]


def _module(path: str, name: str):
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def prepare_fixture(golden: str, frames: str, out: str) -> tuple[str, str]:
    """The fixture made here by ``fixture.py`` with the carried frames and annotations in place: (digest, the
    official fixture's digest)."""
    subprocess.run(
        [sys.executable, os.path.join(golden, "fixture.py"), out, *FIXTURE_ARGS], check=True, capture_output=True
    )
    for name in ("frames", "ann"):
        shutil.rmtree(os.path.join(out, name))
        shutil.copytree(os.path.join(frames, name), os.path.join(out, name))
    digest = _module(os.path.join(golden, "fixture.py"), "golden_fixture").digest(out)
    meta_path = os.path.join(out, "fixture.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["digest"] = digest
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    with open(os.path.join(golden, "official-activitynet-resnet18-seed3.json")) as f:
        ref = json.load(f)["fixture"]["digest"]
    return digest, ref


def frameexit_wrapper(folder: str, device: str) -> str:
    """An executable ``frameexit`` running this checkout's CLI with ``--device DEVICE`` added to ``infer``."""
    path = os.path.join(folder, "frameexit")
    with open(path, "w") as f:
        f.write(
            f'#!/bin/sh\nexec "{sys.executable}" -c "import sys; sys.path.insert(0, {ROOT!r}); from cli import main; '
            f'main(prog_name=\'frameexit\')" "$@" --device {device}\n'
        )
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("golden", help="a copy of ../shared/golden")
    ap.add_argument(
        "--frames", required=True, help="the fixture's frames and ann folders, made on the reference machine"
    )
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="golden-device-")
    try:
        prepared = os.path.join(tmp, "prepared")
        digest, ref = prepare_fixture(a.golden, a.frames, prepared)
        if digest != ref:
            print(
                f"golden: the fixture made on this machine has digest {digest[:16]}..., the official code's "
                f"{ref[:16]}...: its checkpoint bytes differ here (torch {_torch_version()}); not compared"
            )
            sys.exit(2)
        print(f"golden: fixture digest {digest[:16]}... equals the official code's; infer --device {a.device}")
        check = _module(os.path.join(a.golden, "check"), "golden_check")
        real_run = subprocess.run

        def run(args, **kwargs):
            # the check's own fixture call: the prepared fixture, its paths rewritten to where the check wants it
            if len(args) > 1 and str(args[1]).endswith("fixture.py"):
                shutil.copytree(prepared, args[2])
                meta_path = os.path.join(args[2], "fixture.json")
                with open(meta_path) as f:
                    text = f.read().replace(prepared, args[2])
                with open(meta_path, "w") as f:
                    f.write(text)
                return subprocess.CompletedProcess(args, 0, "", "")
            return real_run(args, **kwargs)

        check.subprocess.run = run
        sys.argv = ["check", "--frameexit", frameexit_wrapper(tmp, a.device)]
        check.main()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
