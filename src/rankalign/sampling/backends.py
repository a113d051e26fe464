"""Where a sample run's candidate responses come from: a generation backend (`generation.py`:
the run's `backend` for `policy` sources, `openai` for endpoint sources), or the input row
itself (`dataset_responses`). This module turns the run's options into the backends' terms.
"""

from __future__ import annotations

from rankalign.config import same_fields
from rankalign.generation import (
    BackendOptions,
    GenerationBackend,
    check_backend,
    make_backend,
)
from rankalign.sampling.config import SampleConfig, SourceConfig


def backend_options(cfg: SampleConfig, device: str, src: SourceConfig | None = None):
    """The run's loading options (for an `openai` source: its endpoint)."""
    remote = src.remote_config() if src is not None and src.kind == "openai" else None
    return same_fields(BackendOptions, cfg, device=device, remote=remote)


def load_policy(name: str, cfg: SampleConfig, device: str) -> GenerationBackend:
    """A `policy` source's model through the run's backend."""
    return make_backend(cfg.backend, name, backend_options(cfg, device))


def load_remote(src: SourceConfig, cfg: SampleConfig) -> GenerationBackend:
    """An `openai` source's endpoint (nothing is loaded or sent yet)."""
    return make_backend("openai", src.model, backend_options(cfg, "cpu", src))


def dataset_responses(row: dict, src: SourceConfig) -> list[tuple[str, str]]:
    """The responses the data already has (paper's "P"): (label, text) pairs."""
    if not src.columns:
        labels = row.get("sources") or ["dataset"] * len(row["responses"])
        return [(src.name or label, text) for label, text in zip(labels, row["responses"])]
    pairs = []
    for col in src.columns:
        values = row.get(col)
        for v in values if isinstance(values, list) else [] if values is None else [values]:
            text = v.get("content", "") if isinstance(v, dict) else str(v)
            pairs.append((src.name or f"dataset:{col}", text))
    return pairs


def check_backend_sources(cfg: SampleConfig, processes: int = 1) -> None:
    """What the run's backend needs and cannot do for its policy sources (e.g. vllm: the
    package, one process, no diverse beam search), refused before anything loads."""
    requests = {
        f"sources[{i}]": s.request(cfg.max_new_tokens, cfg.stop)
        for i, s in enumerate(cfg.sources)
        if s.kind == "policy"
    }
    if requests:
        check_backend(cfg.backend, requests, processes)
