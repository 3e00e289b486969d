#!/usr/bin/env bash
# One prepared check on whatever accelerator JAX finds (or the CPU): prints the device kind, runs
# the augmentation benchmark, the training-loop and throughput benchmarks and the multi-device
# tests, and writes everything under $OUT. Each part is time-boxed so that the whole run ends
# within 8 minutes.
#
#   benchmarks/device_check.sh                  # full run
#   REPEATS=2 TRAIN_REPEATS=1 benchmarks/device_check.sh   # a quick run (e.g. on a CPU)
#
# Settings (environment):
#   OUT            output folder (default ./device_out): device.txt, augment.txt,
#                  train_loop.txt, train_throughput.txt, tests.txt, summary.txt
#   PYTHON         interpreter with jaxreg's dependencies (default .venv/bin/python, else python3)
#   REPEATS        timed calls per row of benchmarks/augment.py (default 10)
#   TRAIN_REPEATS  timed epochs per row of benchmarks/train_loop.py and
#                  benchmarks/train_throughput.py (default 3)
#   AUGMENT_S, TRAIN_S, THROUGHPUT_S, TESTS_S   time boxes in seconds (defaults 150, 80, 110,
#                  90; with the device probe (30): at most 460 s, plus 5 s to kill each part
#                  that overruns)
#
# Peer libraries that are not installed (kornia, albumentations, augmax, TensorFlow) are skipped
# by the benchmark itself, with a note in its table. A part that fails or runs out of time is
# recorded in summary.txt and the next part still runs; the exit status is 0 only when every
# part succeeded.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-./device_out}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
REPEATS="${REPEATS:-10}"
TRAIN_REPEATS="${TRAIN_REPEATS:-3}"
AUGMENT_S="${AUGMENT_S:-150}"
TRAIN_S="${TRAIN_S:-80}"
THROUGHPUT_S="${THROUGHPUT_S:-110}"
TESTS_S="${TESTS_S:-90}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
status=0
t_start=$(date +%s)

# part NAME SECONDS LOGFILE COMMAND...: runs COMMAND under `timeout`, output to LOGFILE and here.
part() {
  local name=$1 limit=$2 log=$3
  shift 3
  local t0 rc
  t0=$(date +%s)
  echo "== $name (time box ${limit} s) =="
  timeout --kill-after=5 "$limit" "$@" > "$log" 2>&1
  rc=$?
  cat "$log"
  local took=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "$name: TIMED OUT after ${took} s (box ${limit} s), partial output in $log" | tee -a "$SUMMARY"
    status=1
  elif [ "$rc" -ne 0 ]; then
    echo "$name: FAILED (exit $rc) after ${took} s, see $log" | tee -a "$SUMMARY"
    status=1
  else
    echo "$name: ok in ${took} s" | tee -a "$SUMMARY"
  fi
}

echo "== device =="
if ! timeout 30 "$PYTHON" - > "$OUT/device.txt" 2>&1 <<'EOF'
import os

import jax

devices = jax.devices()
d = devices[0]
print(f"device kind: {d.device_kind} (platform {d.platform}, {len(devices)} device(s))")
print(f"jax {jax.__version__}, {os.cpu_count()} CPU cores")
EOF
then
  cat "$OUT/device.txt"
  echo "device: jax could not start, see $OUT/device.txt" | tee -a "$SUMMARY"
  exit 1
fi
cat "$OUT/device.txt"
cat "$OUT/device.txt" >> "$SUMMARY"

part "augment benchmark" "$AUGMENT_S" "$OUT/augment.txt" \
  "$PYTHON" benchmarks/augment.py --repeats "$REPEATS"

part "train-loop benchmark" "$TRAIN_S" "$OUT/train_loop.txt" \
  "$PYTHON" benchmarks/train_loop.py --repeats "$TRAIN_REPEATS"

part "training throughput" "$THROUGHPUT_S" "$OUT/train_throughput.txt" \
  "$PYTHON" benchmarks/train_throughput.py --train-size 1024 --batch-size 128 \
  --repeats "$TRAIN_REPEATS" --loops scan,stream

# Multi-device tests: 1 vs 8 forced host devices, two jax.distributed processes.
part "multi-device tests" "$TESTS_S" "$OUT/tests.txt" \
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/train/test_parallel.py tests/train/test_distributed.py

echo "total: $(( $(date +%s) - t_start )) s" | tee -a "$SUMMARY"
exit "$status"
