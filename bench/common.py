"""What every benchmark records beside its numbers: the machine, and one JSON line per run."""

from __future__ import annotations

import json
import os
import platform
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
