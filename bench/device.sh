#!/usr/bin/env bash
# The CUDA path's checks and figures in one call on a lent GPU machine (issue 24), at most 8 minutes, every
# figure and log under $OUT (7 files; ./device-out where OUT is unset):
#   env.txt      the machine, the GPU, the versions
#   pytest.log   pytest -m cuda (tests/jobs/test_cuda.py, with -s: each test prints what it measured) and the
#                CPU-side device tests (tests/jobs/test_devices.py)
#   extract.log  bench/extract.py: ResNet-50 at 224 px on 350-px JPEGs, fp32 and faster modes, loader-only,
#   extract.json backbone-only and end-to-end frames/s, GPU utilisation, deviation from fp32
#   replay.log   bench/replay.py --head-only at ActivityNet and HVU scale: the head pass on the GPU, against the CPU
#   golden.log   the golden fixture's decisions with infer --device cuda against the official code's
#   summary.txt  each step's exit status and seconds, and the lines that carry the figures
#
# Here, first (downloads the wheels the GPU machine lacks into .whl/, copies ../shared/golden and makes its
# fixture's frames into .device/; both folders are ignored by git and travel with `carry`):
#   bench/device.sh --prepare
# A dry run on this machine's CPU at a tiny size, so that the call on the GPU is not the script's first run:
#   bench/device.sh --device cpu --tiny
# On the GPU machine (the device tool's run, with carry [".whl", ".device"]):
#   bash bench/device.sh
# The project runs there on that machine's own torch (its pins do not apply), from this checkout (PYTHONPATH).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DEVICE=cuda
TINY=0
PREPARE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --prepare) PREPARE=1; shift ;;
    *) echo "bench/device.sh: unknown argument $1 (see the comment at its top)" >&2; exit 2 ;;
  esac
done
WHEELS="dask==2026.8.0 distributed==2026.8.0 dask-cuda==26.10.0 partd locket tblib tornado zict"

if [ "$PREPARE" = 1 ]; then
  # wheels for the GPU machine's Python 3.12 (pure Python, and tornado's abi3 build)
  mkdir -p .whl .device
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS || exit 1
  rm -rf .device/golden .device/golden-frames
  cp -r ../shared/golden .device/golden && chmod -R u+w .device/golden
  # the fixture's frames as this machine's Pillow encodes them (another Pillow makes other bytes)
  .venv/bin/python ../shared/golden/fixture.py .device/golden-fixture --kind activitynet --backbone resnet18 \
    --videos 24 --seed 3 >/dev/null || exit 1
  mkdir -p .device/golden-frames
  mv .device/golden-fixture/frames .device/golden-fixture/ann .device/golden-frames/
  rm -rf .device/golden-fixture
  du -sh .whl .device
  exit 0
fi

OUT="${OUT:-$ROOT/device-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ "$DEVICE" = cpu ] && PY=.venv/bin/python
SITE=/tmp/frameexit-site
export PYTHONPATH="$ROOT"
if ! "$PY" -c "import dask, distributed" 2>/dev/null || { [ "$DEVICE" != cpu ] && ! "$PY" -c "import dask_cuda" 2>/dev/null; }; then
  rm -rf "$SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || { echo "bench/device.sh: installing the carried wheels (.whl/) failed" >&2; exit 1; }
  export PYTHONPATH="$ROOT:$SITE"
fi
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

step() {  # step NAME SECONDS LOG COMMAND...: run with a time limit, record exit status and seconds
  local name="$1" limit="$2" log="$3"; shift 3
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  echo "[$name] exit $rc in $((SECONDS - t0)) s (limit $limit s)" >>"$SUMMARY"
}

{
  date -u
  nvidia-smi 2>&1 | head -15
  echo "CPUs: $(nproc); memory: $(free -g | awk '/Mem:/ {print $2}') GiB; python: $PY"
  "$PY" - <<'EOF'
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version(), "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", p.multi_processor_count, "SMs")
for name in ("torchvision", "numpy", "h5py", "pyarrow", "PIL", "dask", "distributed", "dask_cuda", "click", "tqdm"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:
        print(name, "MISSING:", exc)
EOF
} >"$OUT/env.txt" 2>&1
grep -E "^(python|gpu) " "$OUT/env.txt" >>"$SUMMARY"

if [ "$TINY" = 1 ]; then
  EXTRACT=(--backbone resnet18 --size 64 --videos 40 --distinct-videos 4 --batch-videos 4 --num-workers 0 2
           --batching batched --modes fp32 bf16+cl --max-seconds 5)
  REPLAY_SIZES=("--videos 256 --compare-shards 2")
  GOLDEN_LIMIT=600  # the fixture's calibration takes about 40 s of this 2-core VM
else
  EXTRACT=(--backbone resnet50 --size 224 --videos 9000 --distinct-videos 100 --batch-videos 32 --num-workers 15
           --batching batched --modes fp32 bf16+cl fp16+cl --max-seconds 10)
  REPLAY_SIZES=("--preset activitynet --compare-shards 16" "--preset hvu --compare-shards 16")
  GOLDEN_LIMIT=80
fi
# each step has a limit (their sum near 8 minutes, each step expected well inside its own); the CPU-side device
# tests on 4 processes where pytest-xdist and the cores are there
XDIST=""
"$PY" -c "import xdist" 2>/dev/null && [ "$(nproc)" -ge 8 ] && XDIST="-n 4"

# 1. the CUDA tests (skipped on a CPU), then the device options' CPU-side tests
export PY DEVICE XDIST  # for the steps run by `bash -c` under `timeout`
step pytest 120 "$OUT/pytest.log" bash -c '"$PY" -m pytest -p no:cacheprovider -s -q -m cuda tests/jobs/test_cuda.py
  "$PY" -m pytest -p no:cacheprovider -q $XDIST tests/jobs/test_devices.py'

# 2. extraction throughput
step extract 170 "$OUT/extract.log" "$PY" bench/extract.py --device "$DEVICE" "${EXTRACT[@]}" --json "$OUT/extract.json"

# 3. replay's head pass on the device, against the CPU
step replay 110 "$OUT/replay.log" bash -c 'for size in "$@"; do
  echo "== bench/replay.py --head-only --device $DEVICE $size"; "$PY" bench/replay.py --head-only --device "$DEVICE" $size || exit
done' replay "${REPLAY_SIZES[@]}"

# 4. the golden fixture's decisions with infer on the device
if [ -d .device/golden ] && [ -d .device/golden-frames ]; then
  step golden "$GOLDEN_LIMIT" "$OUT/golden.log" "$PY" bench/golden_device.py .device/golden --frames .device/golden-frames --device "$DEVICE"
else
  echo "[golden] not run: .device/golden and .device/golden-frames are missing (bench/device.sh --prepare)" >>"$SUMMARY"
fi

{
  echo "--- figures"
  grep -hE "passed|failed|skipped|error|^CUDA |^replay \(head|^infer on CUDA|^head on CUDA|--scheduler cuda:" "$OUT/pytest.log"
  grep -hE "frames/s|ratio|verdict|target|utilisation|deviation" "$OUT/extract.log" | tail -40
  grep -hE "^==|^\(a|head pass:|against the CPU|GPU memory" "$OUT/replay.log"
  [ -f "$OUT/golden.log" ] && tail -3 "$OUT/golden.log"
} >>"$SUMMARY" 2>/dev/null
cat "$SUMMARY"
