#!/usr/bin/env bash
# Wheels the GPU machine lacks (it has torch, transformers, accelerate, peft, pyarrow, pandas,
# xxhash, fsspec; Python 3.12, x86-64), downloaded here into .whl/ (git-ignored) so that the
# device run carries them: `carry: [".whl"]`, then `bash bench/gpu/check.sh $OUT`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "datasets==5.2.0" "trl==1.16.0" "dill==0.4.1" "multiprocess==0.70.19"
ls -l .whl
