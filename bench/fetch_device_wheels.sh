#!/usr/bin/env bash
# Wheels the device machine lacks (it has torch, transformers 5.17, safetensors, tokenizers,
# huggingface-hub 1.33, accelerate, typer, pillow — KINDS.md), for CPython 3.12 on x86-64.
# They go to .whl/ (git-ignored) and travel with `carry: [".whl"]`; see bench/GPU.md.
# diffusers is missing there; transformers is pinned to the version the CPU tests ran with,
# with the regex it checks for at import; pydantic and pydantic-settings (with their own needs)
# because the engine reads its precision setting from app.settings.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
rm -f .whl/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  diffusers==0.42.1 transformers==5.24.0 regex==2026.11.19 \
  pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4 \
  typing-inspection==0.4.5 annotated-types==0.8.0 typing-extensions==4.16.0
ls -l .whl
du -sh .whl
