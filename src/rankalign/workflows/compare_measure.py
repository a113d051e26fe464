"""Measuring a training call of `rankalign compare`: wall time and peak memory (see
`compare.py`'s docstring for what is measured and why)."""

from __future__ import annotations

import gc
import time
from pathlib import Path


def _reset_peak_rss() -> bool:
    try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def measured(fn) -> dict:
    """Run `fn()` and measure it: wall seconds, peak RSS (MiB) of this process during the call
    (null with a note where it cannot be reset), peak CUDA memory allocated (MiB) on a GPU."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    gc.collect()
    reset = _reset_peak_rss()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    hwm = _status_kb("VmHWM") if reset else None
    out = {
        "train_seconds": seconds,
        "peak_rss_mb": hwm / 1024 if hwm is not None else None,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }
    if hwm is None:
        out["notes"] = {"peak_rss_mb": "the peak RSS could not be reset (/proc/self/clear_refs)"}
    return out
