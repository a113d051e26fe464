#!/usr/bin/env bash
# The GPU check (issue 18), prepared to run once within 8 minutes on one H200:
#   bash bench/gpu/check.sh OUT_DIR [check.py options]
# The GPU machine has torch, transformers, accelerate and peft but not datasets or trl: carry
# their wheels in .whl/ (see bench/README.md, "GPU check") and they are installed here first.
# rankalign itself runs from src/ (no install). Results: OUT_DIR/check.json, OUT_DIR/dpo_trl.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: bash bench/gpu/check.sh OUT_DIR [check.py options]}
shift
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/rankalign-site .whl/*.whl
  export PYTHONPATH=/tmp/rankalign-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec "$PY" bench/gpu/check.py "$out" "$@"
