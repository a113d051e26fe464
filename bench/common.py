"""What every benchmark records beside its numbers: the machine, and one JSON line per run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch


def machine_info(device: str | None = None) -> dict:
    device = str(device or "cpu")
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def append_record(path: str | os.PathLike, bench: str, record: dict) -> None:
    """Append {"bench", "time", **record} as one line to the results file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(
            json.dumps({"bench": bench, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record})
            + "\n"
        )


# Model shapes for random-initialised benchmarks (Llama architecture; SmolLM2 is a Llama). The
# sizes are the released configs'; the weights are random, so no download is needed.
SHAPES = {
    "smollm2-1.7b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "rope_theta": 130000.0,
    },
    "llama3-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
        "rope_theta": 500000.0,
    },
    # the CPU fallback's stand-in: the same code paths in seconds
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1024,
        "tie_word_embeddings": False,
        "rope_theta": 10000.0,
    },
}


def llama_config(shape: str, **overrides):
    """A LlamaConfig of one of SHAPES (pad 0, BOS 1, EOS 2, as the tests' tokenizers)."""
    from transformers import LlamaConfig

    fields = {
        **SHAPES[shape],
        "max_position_embeddings": 4096,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    return LlamaConfig(**{**fields, **overrides})


def run_python(code: str, spec: dict, env: dict, what: str) -> dict:
    """`code` in a fresh interpreter (its own peak memory, no state shared with this one), given
    `spec` as JSON in argv[1]; it writes its record to `spec["result"]`, which is returned."""
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[1],
    )
    if proc.returncode:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-4000:]}")
    return json.loads(Path(spec["result"]).read_text())
