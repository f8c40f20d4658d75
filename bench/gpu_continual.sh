#!/usr/bin/env bash
# The concept-world continual benchmark on the device machine's GPU, in one `device` call:
#   carry: [".whl"]   (bench/fetch_device_wheels.sh)   timeout_s: 600
#   command: bash bench/gpu_continual.sh [SECONDS] [extra `bench continual` options]
# It runs LACU over the default 10-step sequence on CUDA (bf16 autocast) with the CPU run's
# settings, stops after SECONDS (default 420), and leaves under $OUT: log.txt, steps.tgz (each
# finished step's metrics and manifest), and results.json/.csv/.png and final-check.json when
# the run finished.
set -uo pipefail
cd "$(dirname "$0")/.."
limit=${1:-420}
shift || true
out=${OUT:-/tmp/gpu-continual-out}
work=/tmp/gpu-continual
mkdir -p "$out" "$work"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 | tee "$out/log.txt"
timeout "$limit" python3 -c "from bench.cli import bench_app; bench_app()" continual \
  --methods lacu --device cuda --out "$work" --json "$@" >"$out/stdout.json" 2>>"$out/log.txt"
echo "exit $? after the ${limit} s limit or sooner" >>"$out/log.txt"
for f in results.json results.csv results.png lacu/final-check.json; do
  [ -f "$work/$f" ] && cp "$work/$f" "$out/"
done
(cd "$work" && find . -name "*.json" -size -2M -print0 \
  | tar --null -czf "$out/steps.tgz" -T -) 2>>"$out/log.txt"
ls -la "$out"
