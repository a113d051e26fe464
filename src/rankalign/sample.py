"""`rankalign sample`: k candidate responses per prompt, from many sources (RRHF paper §4.1).

A run has a list of sources, each with its own strategy and count; every response is recorded
with the source that produced it:

    prompts: prompts.jsonl
    out: candidates.jsonl
    model: path-or-hub-name            # the policy (default for policy sources)
    max_new_tokens: 128
    stop: ["\\n\\nHuman:", "\\n\\nAssistant:"]   # truncate every source's responses (§4.1)
    sources:
      - {kind: policy, strategy: diverse-beam, num: 4, num_beams: 4, num_beam_groups: 4,
         diversity_penalty: 1.0, temperature: 0.8}
      - {kind: policy, strategy: sample, num: 4, top_p: 1.0, temperature: 0.8}
      - {kind: policy, model: other/model, strategy: greedy, num: 1}   # another local model
      - {kind: dataset}                # the responses already in the data ("P" of Table 1)
      - {kind: openai, model: gpt-4o-mini, base_url: http://127.0.0.1:8000/v1, num: 1}

or a preset of the paper's Table 1: `--preset BP|SP|DP|D|P` (explicit `sources` are added after
the preset's). Output rows are ranked lists without scores: {"id", "prompt", "responses",
"sources", ...other input fields}. Exact duplicate and empty responses (after stop-string
truncation and stripping) are removed and counted; a summary is printed and saved beside the output
(`<out stem>.summary.json`), with the resolved config (`<out stem>.config.yaml`).

Reproducibility: each sampled response has its own seed, derived from (seed, source index, prompt
id, sample index), so it does not depend on the batch, the number of processes or a resume (see
`generation.sample` for the floating-point caveat); beam strategies are deterministic.

Validate, then write: options (with every source's values), the output location, every prompt
row, every model (loaded) and every prompt's chat template are checked before the fingerprint and
config are written.

Scale: prompts are batched by token length; rows are committed in atomic shards per process, so
a killed run resumes where it stopped (same command) and ends with every prompt exactly once.
Data parallel: `accelerate launch --multi_gpu -m rankalign.cli sample ...` (on CPU:
`torchrun --standalone --nproc_per_node N -m rankalign.cli sample ...`); each process takes a
slice of the remaining prompts, writes its own shards, and process 0 merges them in input order.
`backend: vllm` generates with vLLM when it is installed (sampling, greedy, plain beam search),
as one process: vLLM spreads a model over `tensor_parallel_size` GPUs itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import check_output_location, done_rows, side_path
from .errors import UserError
from .models import DTYPES, check_device
from .tokenization import CHAT_TEMPLATE_MODES

STRATEGIES = {
    "greedy": "greedy",
    "beam": "beam",
    "diverse-beam": "diverse-beam",
    "sample": "sample",
    "top-p": "sample",
    "top-k": "sample",
    "sampling": "sample",
}
KINDS = ("policy", "dataset", "openai")
HH_STOP = ["\n\nHuman:", "\n\nAssistant:"]

# RRHF paper Table 1 (ρ1..ρ4 from the initial policy, ρ5, ρ6 the dataset's responses), §4.1 settings.
_DIVERSE = {
    "kind": "policy",
    "strategy": "diverse-beam",
    "num_beams": 4,
    "num_beam_groups": 4,
    "diversity_penalty": 1.0,
    "temperature": 0.8,
}
_BEAM = {"kind": "policy", "strategy": "beam", "num_beams": 4}
_TOP_P = {"kind": "policy", "strategy": "sample", "top_p": 1.0, "temperature": 0.8}
_DATASET = {"kind": "dataset"}
PRESETS = {
    "BP": [_BEAM, _DATASET],
    "SP": [_TOP_P, _DATASET],
    "DP": [_DIVERSE, _DATASET],
    "D": [_DIVERSE],
    "P": [_DATASET],
}


@dataclass
class SourceConfig:
    """One producer of responses (one entry of `sources`). `check` metadata: the range of a value
    (checked with the run's other options, see config.check_options)."""

    kind: str  # policy | dataset | openai
    # policy: greedy | beam | diverse-beam | sample (alias top-p, top-k)
    strategy: str = "sample"
    num: int = field(default=4, metadata={"check": ">= 1"})  # responses per prompt
    # policy: another local/hub model (default: the run's model); openai: the model name
    model: str | None = None
    name: str | None = None  # label recorded in `sources` (default: derived from the settings)
    # default 1.0 (greedy: 0)
    temperature: float | None = field(default=None, metadata={"check": ">= 0"})
    top_p: float = field(default=1.0, metadata={"check": "(0, 1]"})  # 0 would keep no token
    top_k: int = field(default=0, metadata={"check": ">= 0"})  # 0 = off
    # beam strategies; default: num
    num_beams: int | None = field(default=None, metadata={"check": ">= 1"})
    # diverse-beam; default: num_beams (one beam per group)
    num_beam_groups: int | None = field(default=None, metadata={"check": ">= 1"})
    # diverse-beam; default 1.0
    diversity_penalty: float | None = field(default=None, metadata={"check": ">= 0"})
    length_penalty: float = 1.0  # beam strategies: score = sum log p / length ** length_penalty
    # default: the run's max_new_tokens
    max_new_tokens: int | None = field(default=None, metadata={"check": ">= 1"})
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # openai: name of the environment variable with the key
    timeout: float = field(default=60.0, metadata={"check": "> 0"})  # openai, seconds
    max_retries: int = field(default=4, metadata={"check": ">= 0"})  # openai
    concurrency: int = field(default=8, metadata={"check": ">= 1"})  # openai
    # openai: first retry after about this many seconds, doubling
    backoff: float = field(default=1.0, metadata={"check": ">= 0"})
    columns: list[str] | None = None  # dataset: take responses from these fields instead

    def __post_init__(self):
        from .config import check_options

        check_options(self)  # types, finite numbers, the `check` ranges (a UserError)
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind '{self.kind}' (use {', '.join(KINDS)})")
        if self.columns is not None and (
            not isinstance(self.columns, list) or not all(isinstance(c, str) for c in self.columns)
        ):
            raise ValueError("columns must be a list of field names")
        if self.kind == "openai":
            if self.temperature is None:
                self.temperature = 1.0
            if not self.model or not self.base_url:
                raise ValueError("an openai source needs `model` and `base_url`")
            self.remote_config()  # its checks (base_url scheme, ...) before any request
        if self.kind != "policy":
            return
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy '{self.strategy}' (use {', '.join(STRATEGIES)})")
        self.strategy = STRATEGIES[self.strategy]
        beams = self.strategy in ("beam", "diverse-beam")
        if self.strategy == "greedy" or self.temperature is None:
            self.temperature = 0.0 if self.strategy == "greedy" else 1.0
        if self.strategy == "greedy" and self.num != 1:
            raise ValueError("greedy decoding gives one response per prompt: set num: 1")
        if self.strategy == "sample" and self.temperature <= 0:
            raise ValueError("sampling needs temperature > 0 (use strategy: greedy for 0)")
        if beams:
            if self.temperature <= 0:
                raise ValueError(f"{self.strategy} needs temperature > 0")
            self.num_beams = self.num_beams or self.num
            if self.strategy == "diverse-beam":
                self.num_beam_groups = self.num_beam_groups or self.num_beams
                self.diversity_penalty = (
                    1.0 if self.diversity_penalty is None else self.diversity_penalty
                )
            else:
                self.num_beam_groups, self.diversity_penalty = 1, 0.0
            if self.num > self.num_beams:
                raise ValueError(f"num ({self.num}) cannot exceed num_beams ({self.num_beams})")
            if self.num_beams % self.num_beam_groups:
                raise ValueError(
                    f"num_beams ({self.num_beams}) must be divisible by "
                    f"num_beam_groups ({self.num_beam_groups})"
                )

    @classmethod
    def from_dict(cls, d: Any, where: str) -> SourceConfig:
        if not isinstance(d, dict):
            raise ValueError(f"{where}: each source must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k)[:80] for k in d if k not in known)
        if unknown:
            raise ValueError(
                f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})"
            )
        if "kind" not in d:
            raise ValueError(f"{where}: missing 'kind' ({', '.join(KINDS)})")
        try:
            return cls(**d)
        except (ValueError, TypeError, UserError) as e:  # UserError: check_options
            raise ValueError(f"{where}: {e}") from None

    def label(self) -> str:
        """What `sources` records for each response, e.g. policy:diverse-beam(groups=4,...)."""
        if self.name or self.kind == "dataset":
            return self.name or "dataset"
        temp = f"temp={float(self.temperature)}"
        if self.kind == "openai":
            return f"openai:{self.model}({temp})"
        args = []
        if self.strategy == "sample":
            args = (
                [f"top_p={float(self.top_p)}"] + [f"top_k={self.top_k}"] * bool(self.top_k) + [temp]
            )
        elif self.strategy in ("beam", "diverse-beam"):
            args = [f"beams={self.num_beams}"]
            if self.strategy == "diverse-beam":
                args += [
                    f"groups={self.num_beam_groups}",
                    f"penalty={float(self.diversity_penalty)}",
                ]
            args += [temp] * (self.temperature != 1 or self.strategy == "diverse-beam")
            args += [f"length_penalty={float(self.length_penalty)}"] * (self.length_penalty != 1)
        who = "policy" if self.model is None else Path(self.model).name
        return f"{who}:{self.strategy}" + (f"({','.join(args)})" if args else "")

    def remote_config(self):
        """The endpoint settings of an `openai` source (remote.py checks them)."""
        from .remote import RemoteConfig

        return RemoteConfig(
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            timeout=self.timeout,
            max_retries=self.max_retries,
            concurrency=self.concurrency,
            backoff=self.backoff,
        )

    def as_dict(self) -> dict:
        """The settings that matter for this source (for the resolved config)."""
        key = self.strategy if self.kind == "policy" else self.kind
        return {
            k: getattr(self, k) for k in ["kind", *_RELEVANT[key]] if getattr(self, k) is not None
        }


_POLICY = "strategy num model name max_new_tokens "
_RELEVANT = {
    "greedy": _POLICY.split(),
    "sample": (_POLICY + "temperature top_p top_k").split(),
    "beam": (_POLICY + "temperature num_beams length_penalty").split(),
    "diverse-beam": (
        _POLICY + "temperature num_beams num_beam_groups diversity_penalty length_penalty"
    ).split(),
    "dataset": "name columns".split(),
    "openai": "num model name temperature max_new_tokens base_url api_key_env timeout max_retries concurrency backoff".split(),
}


@dataclass
class SampleConfig:
    """Options of `rankalign sample` (YAML keys = flags)."""

    prompts: str = field(
        metadata={"help": "input file/folder: prompts, or pairwise/HH/ranked-list rows"}
    )
    out: str = field(metadata={"help": "output JSONL of ranked lists (no scores)"})
    model: str = field(default="smollm2", metadata={"help": "policy model: folder or hub name"})
    preset: str | None = field(
        default=None,
        metadata={
            "help": "paper Table 1 setting: BP (beam+dataset), SP (top-p+dataset), DP (diverse beam+dataset), "
            "D (diverse beam), P (dataset only)"
        },
    )
    num: int = field(
        default=4,
        metadata={"help": "responses per policy source of a preset (ρ1..ρ4)", "check": ">= 1"},
    )
    # a YAML list in a config file; on the command line a JSON/YAML string
    sources: list | str | None = field(
        default=None,
        metadata={"help": "list of sources (YAML list; on the command line a JSON/YAML string)"},
    )
    max_new_tokens: int = field(
        default=128, metadata={"help": "new tokens per response", "check": ">= 1"}
    )
    stop: list[str] = field(
        default_factory=lambda: list(HH_STOP),
        metadata={"help": "stop strings: responses are cut at the first one (every source)"},
    )
    seed: int = field(
        default=42, metadata={"help": "run seed; each prompt's samples derive from (seed, id)"}
    )
    batch_size: int = field(
        default=8, metadata={"help": "prompts per generation batch", "check": ">= 1"}
    )
    max_prompt_length: int = field(
        default=1024, metadata={"help": "prompt tokens kept (cut from the left)", "check": ">= 1"}
    )
    chat_template: str = field(default="auto", metadata={"help": " | ".join(CHAT_TEMPLATE_MODES)})
    backend: str = field(default="hf", metadata={"help": "hf (transformers) | vllm"})
    tensor_parallel_size: int = field(
        default=1,
        metadata={
            "help": "vllm: GPUs each model is split over (tensor parallelism)",
            "check": ">= 1",
        },
    )
    gpu_memory_utilization: float = field(
        default=0.9,
        metadata={
            "help": "vllm: share of GPU memory for weights and KV cache",
            "check": "(0, 1]",
        },
    )
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16"})
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, cuda:1 (default: the process's)"}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "allow model code from the hub"}
    )
    allow_pickle: bool = field(default=False, metadata={"help": "allow .bin (pickle) weights"})
    on_remote_error: str = field(
        default="fail",
        metadata={
            "help": "a remote request failed after retries: fail (stop; rerun resumes) | skip (count it)"
        },
    )
    shard_size: int = field(default=64, metadata={"help": "rows per output shard", "check": ">= 1"})
    limit: int | None = field(
        default=None, metadata={"help": "only the first N prompts", "check": ">= 1"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output"})

    def __post_init__(self):
        from .config import load_yaml_text

        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset '{self.preset}' (use {', '.join(PRESETS)})")
        extra = self.sources
        if isinstance(extra, str):  # from the command line: the config files' YAML loader
            extra = load_yaml_text(extra, "sources")
        if extra is not None and not isinstance(extra, list):
            raise ValueError("sources must be a list of sources")
        # a preset's policy source makes `num` responses (with as many beams / groups)
        scale = {"num": self.num, "num_beams": self.num, "num_beam_groups": self.num}
        specs = [
            dict(s, **{k: v for k, v in scale.items() if k == "num" or k in s})
            if s["kind"] == "policy"
            else dict(s)
            for s in PRESETS.get(self.preset, [])
        ] + list(extra or [])
        if not specs:
            raise ValueError("nothing to sample: give a preset (--preset DP) or sources")
        self.sources = [
            s if isinstance(s, SourceConfig) else SourceConfig.from_dict(s, f"sources[{i}]")
            for i, s in enumerate(specs)
        ]
        self.preset = None  # expanded into `sources` (so the resolved config reruns as is)
        labels = [s.label() for s in self.sources if s.kind != "dataset"]
        if len(labels) != len(set(labels)):
            raise ValueError("two sources have the same settings; give one a different `name`")
        if sum(s.kind == "dataset" for s in self.sources) > 1:
            raise ValueError("at most one dataset source")
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"backend must be hf or vllm, got '{self.backend}'")
        if self.tensor_parallel_size > 1 and self.backend != "vllm":
            raise ValueError("tensor_parallel_size > 1 needs backend: vllm")
        if self.on_remote_error not in ("fail", "skip"):
            raise ValueError("on_remote_error must be fail or skip")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(
                f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, "
                f"got '{self.chat_template}'"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got '{self.dtype}'")
        if isinstance(self.stop, str):  # a YAML scalar: one stop string (as evaluate takes it)
            self.stop = [self.stop]
        if not isinstance(self.stop, list) or not all(isinstance(s, str) for s in self.stop):
            raise ValueError("stop must be a list of strings")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


# ----------------------------------------------------------------------------- helpers


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from (run seed, source, prompt id, sample index): stable across runs/batches."""
    return (
        int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")
        >> 1
    )


def truncate_at_stop(text: str, stop: list[str]) -> str:
    """Cut at the earliest stop string (RRHF §4.1: no new Human:/Assistant: turn), then strip."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut].strip()


def as_messages(prompt: str | list[dict]) -> list[dict]:
    """A prompt as chat messages for a remote model (HH transcripts become alternating turns)."""
    if isinstance(prompt, list):
        return prompt
    if "\n\nHuman:" not in prompt:
        return [{"role": "user", "content": prompt}]
    messages = []
    for chunk in prompt.split("\n\nHuman:")[1:]:
        human, _, assistant = chunk.partition("\n\nAssistant:")
        messages.append({"role": "user", "content": human.strip()})
        if assistant.strip():
            messages.append({"role": "assistant", "content": assistant.strip()})
    return messages


def _parts_dirs(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.name}.rank*.parts"))


def _done_rows(out: Path) -> list[dict]:
    """Every process's committed rows of a partial run."""
    return [row for folder in _parts_dirs(out) for row in done_rows(folder)]


def _fingerprint(cfg: SampleConfig) -> str:
    """What decides the outputs: a resumed run must not mix two configurations."""
    keys = (
        "prompts",
        "model",
        "max_new_tokens",
        "stop",
        "seed",
        "max_prompt_length",
        "chat_template",
        "backend",
        "dtype",
        "limit",
    )
    data = {k: getattr(cfg, k) for k in keys} | {"sources": [s.as_dict() for s in cfg.sources]}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- backends


class HFPolicy:
    """A transformers causal LM: batched (left padding), KV cache, our diverse beam search."""

    def __init__(self, name: str, cfg: SampleConfig, device: str):
        from .generation import make_stop_fn
        from .models import load_causal_lm, load_tokenizer, resolve_model

        path = resolve_model(name)
        self.tokenizer = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
        self.model = load_causal_lm(
            path,
            dtype=cfg.dtype,
            trust_remote_code=cfg.trust_remote_code,
            allow_pickle=cfg.allow_pickle,
            device=device,
        ).eval()
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos = sorted(eos)
        pad = self.tokenizer.pad_token_id  # only fills positions that the masks hide
        self.pad = pad if pad is not None else (self.eos[0] if self.eos else 0)
        self.stop_fn = make_stop_fn(self.tokenizer, cfg.stop)
        self.cfg = cfg

    def encode(self, prompt) -> tuple[list[int], bool]:
        from .tokenization import encode_prompt

        ids = encode_prompt(self.tokenizer, prompt, self.cfg.chat_template)
        keep = self.cfg.max_prompt_length
        return (ids[-keep:], True) if len(ids) > keep else (ids, False)

    def generate(
        self, src: SourceConfig, ids: list[list[int]], seeds: list[list[int]]
    ) -> list[list[str]]:
        from .generation import diverse_beam_search, sample

        steps = src.max_new_tokens or self.cfg.max_new_tokens
        common = {
            "max_new_tokens": steps,
            "eos_token_ids": self.eos,
            "pad_token_id": self.pad,
            "stop": self.stop_fn,
        }
        if src.strategy in ("beam", "diverse-beam"):
            tokens, _ = diverse_beam_search(
                self.model,
                ids,
                num_beams=src.num_beams,
                num_beam_groups=src.num_beam_groups,
                diversity_penalty=src.diversity_penalty,
                temperature=src.temperature,
                length_penalty=src.length_penalty,
                num_return_sequences=src.num,
                **common,
            )
        else:
            tokens = sample(
                self.model,
                ids,
                num_return_sequences=src.num,
                seeds=[s for row in seeds for s in row],
                temperature=src.temperature,
                top_p=src.top_p,
                top_k=src.top_k,
                **common,
            )
        return [[self.tokenizer.decode(t, skip_special_tokens=True) for t in row] for row in tokens]


class VLLMPolicy:
    """vLLM (GPU): sampling / greedy with per-request seeds, and vLLM's beam search (what it
    cannot do was refused by `check_vllm`)."""

    def __init__(self, name: str, cfg: SampleConfig, device: str):
        import vllm

        from .models import resolve_model

        self.llm = vllm.LLM(
            model=resolve_model(name),
            dtype=cfg.dtype,
            seed=cfg.seed,
            trust_remote_code=cfg.trust_remote_code,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.cfg = cfg

    encode = HFPolicy.encode

    def generate(
        self, src: SourceConfig, ids: list[list[int]], seeds: list[list[int]]
    ) -> list[list[str]]:
        from vllm import SamplingParams

        steps = src.max_new_tokens or self.cfg.max_new_tokens
        if src.strategy == "beam":
            from vllm.sampling_params import BeamSearchParams

            params = BeamSearchParams(
                beam_width=src.num_beams, max_tokens=steps, length_penalty=src.length_penalty
            )
            outs = self.llm.beam_search([{"prompt_token_ids": p} for p in ids], params)
            return [
                [
                    self.tokenizer.decode(s.tokens[len(p) :], skip_special_tokens=True)
                    for s in o.sequences[: src.num]
                ]
                for o, p in zip(outs, ids)
            ]
        prompts = [{"prompt_token_ids": p} for p in ids for _ in range(src.num)]
        params = [
            SamplingParams(
                n=1,
                temperature=src.temperature,
                top_p=src.top_p,
                top_k=src.top_k or -1,
                max_tokens=steps,
                stop=self.cfg.stop,
                seed=s,
            )
            for row in seeds
            for s in row
        ]
        texts = [o.outputs[0].text for o in self.llm.generate(prompts, params, use_tqdm=False)]
        return [texts[i * src.num : (i + 1) * src.num] for i in range(len(ids))]


def remote_responses(src: SourceConfig, prompts: list, seeds: list[int], cfg: SampleConfig) -> list:
    """num completions per prompt from an OpenAI-compatible server (a list, or the Exception)."""
    from .remote import chat_many

    return chat_many(
        src.remote_config(),
        [as_messages(p) for p in prompts],
        temperature=src.temperature,
        n=src.num,
        max_tokens=src.max_new_tokens or cfg.max_new_tokens,
        seed=[s % 2**31 for s in seeds],
        desc=src.label(),
    )  # seeds: best effort


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


def build_row(row: dict, produced: list, stop: list[str], truncated: bool) -> dict:
    """Merge the sources' responses: truncate at stop strings, drop empties and exact duplicates.

    produced: per source, a list of (label, text) or (label, Exception) for a failed request.
    Counts go into the row's private `_stats` (summed over shards at the end, so they survive a
    kill / resume and several processes).
    """
    responses, sources, seen = [], [], set()
    stats: dict[str, Counter] = defaultdict(Counter)
    for label, texts in produced:
        if isinstance(texts, Exception):
            stats[label]["failed"] += 1
            continue
        for text_label, text in texts:
            st = stats[text_label]
            st["generated"] += 1
            text = truncate_at_stop(text, stop)
            if not text:
                st["empty"] += 1
            elif text in seen:
                st["duplicates"] += 1
            else:
                seen.add(text)
                responses.append(text)
                sources.append(text_label)
                st["kept"] += 1
    out = {"id": row["id"], "prompt": row["prompt"], "responses": responses, "sources": sources}
    out.update(
        {
            k: v
            for k, v in row.items()
            if k not in ("id", "prompt", "responses", "scores", "sources")
        }
    )
    out["_stats"] = {k: dict(v) for k, v in stats.items()}
    if truncated:
        out["_prompt_truncated"] = True
    return out


# ----------------------------------------------------------------------------- the run


def main(argv: list[str]) -> int:
    from .config import parse_config

    cfg, _ = parse_config(argv, (SampleConfig,), prog="rankalign sample")
    run(cfg)
    return 0


def _side_paths(out: Path) -> dict[str, Path]:
    return {
        "fingerprint": out.with_name(out.name + ".fingerprint"),
        "config": side_path(out, ".config.yaml"),
        "summary": side_path(out, ".summary.json"),
    }


def validate(cfg: SampleConfig, state) -> tuple:
    """Every check of a run, cheapest first; writes nothing. Returns (data, policies).

    The options were checked by parse_config; here: the output location and what is already
    there, every input row, the backend, every model (loaded) and every prompt's chat template."""
    from .data import load_lists

    out = Path(cfg.out)
    world = state.num_processes
    check_device(cfg.device)
    sides = _side_paths(out)
    parts = [out.with_name(f"{out.name}.rank{r}.parts") for r in range(world)]
    check_output_location(out, files=list(sides.values()), folders=parts)
    if out.exists():
        if not cfg.overwrite:
            raise UserError("output exists (pass --overwrite true to replace it)", file=out)
    elif not cfg.overwrite and _parts_dirs(out):
        fingerprint = sides["fingerprint"]
        old = fingerprint.read_text().strip() if fingerprint.is_file() else None
        if old != _fingerprint(cfg):
            raise UserError(
                "a partial run with other settings is here: rerun it with the same "
                "options, or pass --overwrite true",
                file=_parts_dirs(out)[0],
            )
    data = load_lists(cfg.prompts, empty_responses="drop", limit=cfg.limit)
    check_vllm(cfg, world)
    policies = _load_policies(cfg, cfg.device or str(state.device))
    _check_prompts(cfg, data, policies)
    return data, policies


def check_vllm(cfg: SampleConfig, processes: int = 1) -> None:
    """What `backend: vllm` needs (the package, one process) and cannot do (diverse beam search,
    beam search with temperature), refused before anything loads; VLLMPolicy relies on it."""
    import importlib.util

    if cfg.backend != "vllm" or not any(s.kind == "policy" for s in cfg.sources):
        return
    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            "backend 'vllm' needs the vllm package (pip install vllm; needs a GPU); use backend: hf"
        )
    if processes > 1:
        raise UserError(
            "backend vllm runs as one process (vLLM uses several GPUs itself): "
            "launch without torchrun/accelerate and set tensor_parallel_size"
        )
    for i, s in enumerate(cfg.sources):
        if s.kind == "policy" and s.strategy == "diverse-beam":
            raise UserError(
                "vLLM has no diverse beam search: use backend: hf for diverse-beam sources",
                field=f"sources[{i}]",
            )
        if s.kind == "policy" and s.strategy == "beam" and s.temperature != 1.0:
            raise UserError(
                "backend vllm: beam search with temperature is not supported",
                field=f"sources[{i}]",
            )


def _load_policies(cfg: SampleConfig, device: str) -> dict[str, Any]:
    """Each distinct model of the policy sources, loaded once (its files checked first)."""
    backend = {"hf": HFPolicy, "vllm": VLLMPolicy}[cfg.backend]
    policies: dict[str, Any] = {}
    for s in cfg.sources:
        if s.kind == "policy" and (s.model or cfg.model) not in policies:
            policies[s.model or cfg.model] = backend(s.model or cfg.model, cfg, device)
    return policies


def _check_prompts(cfg: SampleConfig, data, policies: dict[str, Any]) -> None:
    """Every prompt renders with every policy's tokenizer (chat template) before any output."""
    from .tokenization import prompt_text

    for name, policy in policies.items():
        for row, loc in zip(data.rows, data.locations):
            try:
                prompt_text(policy.tokenizer, row["prompt"], cfg.chat_template)
                continue
            except UserError as e:
                problem = f"{e} (model {name})"
            except Exception as e:  # a template that raises (e.g. roles must alternate)
                problem = (
                    f"the chat template of {name} fails on this prompt: "
                    f"{type(e).__name__}: {str(e)[:200]}"
                )
            raise UserError(
                problem,
                file=loc.get("file"),
                line=loc.get("line"),
                row=loc.get("row"),
                field="prompt",
            )


def _prepare_output(cfg: SampleConfig, out: Path) -> None:
    """Process 0, after `validate`: clear what --overwrite replaces, write fingerprint and config."""
    from .config import dump_config
    from .data import atomic_write_text

    sides = _side_paths(out)
    if out.exists():  # validate allowed it: --overwrite
        out.unlink()
    if cfg.overwrite:
        for folder in _parts_dirs(out):
            shutil.rmtree(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sides["fingerprint"], _fingerprint(cfg) + "\n")
    resolved = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    resolved["sources"] = [s.as_dict() for s in cfg.sources]
    dump_config(sides["config"], {"sample": resolved})


def run(cfg: SampleConfig) -> dict | None:
    """Sample every prompt; returns the summary (on process 0; None on the others).

    Validate, then write: options, output location, input rows, models and prompts are all
    checked (by every process) before process 0 writes the fingerprint and config."""
    from tqdm.auto import tqdm

    from .data import ShardedWriter
    from .models import process_state

    started = time.time()
    state = process_state(cfg.device)
    rank, world = state.process_index, state.num_processes
    out = Path(cfg.out)
    data, policies = validate(cfg, state)
    state.wait_for_everyone()  # every process has validated before anything is written
    if state.is_main_process:
        _prepare_output(cfg, out)
    state.wait_for_everyone()
    done = {r["id"] for r in _done_rows(out)}
    state.wait_for_everyone()  # everyone has read `done` before anyone writes a new shard
    todo = [r for r in data.rows if r["id"] not in done][rank::world]
    if done and state.is_main_process:
        print(f"rankalign sample: resuming, {len(done)} of {len(data.rows)} prompts already done")

    writer = ShardedWriter(out.with_name(f"{out.name}.rank{rank}"), cfg.shard_size)
    if todo:
        _sample_rows(cfg, todo, writer, state, tqdm, policies)
    writer.flush()
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return _merge(cfg, out, data, world, time.time() - started)


def _sample_rows(
    cfg: SampleConfig, todo: list[dict], writer, state, tqdm, policies: dict[str, Any]
) -> None:
    encoded = {name: [p.encode(r["prompt"]) for r in todo] for name, p in policies.items()}
    first = next(iter(encoded.values()), None)
    # batch prompts of similar length (longest first: memory problems show up at once)
    length = [
        len(first[i][0]) if first else len(json.dumps(r["prompt"])) for i, r in enumerate(todo)
    ]
    order = sorted(range(len(todo)), key=lambda i: -length[i])
    with tqdm(
        total=len(todo),
        unit="prompt",
        desc="sample",
        dynamic_ncols=True,
        disable=not state.is_local_main_process,
    ) as bar:
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            rows = [todo[i] for i in batch]
            produced: list[list] = [[] for _ in batch]
            for si, src in enumerate(cfg.sources):
                if src.kind == "dataset":
                    for k, row in enumerate(rows):
                        produced[k].append(("dataset", dataset_responses(row, src)))
                    continue
                label = src.label()
                seeds = [
                    [derive_seed(cfg.seed, si, r["id"], j) for j in range(src.num)] for r in rows
                ]
                if src.kind == "policy":
                    name = src.model or cfg.model
                    texts = policies[name].generate(
                        src, [encoded[name][i][0] for i in batch], seeds
                    )
                else:
                    texts = remote_responses(
                        src, [r["prompt"] for r in rows], [s[0] for s in seeds], cfg
                    )
                for k, t in enumerate(texts):
                    if isinstance(t, Exception) and cfg.on_remote_error == "fail":
                        writer.flush()  # finished batches stay: a rerun resumes after them
                        raise UserError(
                            f"source {label}: prompt '{rows[k]['id']}': {t} "
                            "(rerun to resume, or set on_remote_error: skip)"
                        )
                    produced[k].append(
                        (label, t if isinstance(t, Exception) else [(label, x) for x in t])
                    )
            for i, row, prod in zip(batch, rows, produced):
                truncated = any(enc[i][1] for enc in encoded.values())
                writer.add(build_row(row, prod, cfg.stop, truncated))
            bar.update(len(batch))


def _merge(cfg: SampleConfig, out: Path, data, world: int, elapsed: float) -> dict:
    """Process 0: all shards -> the output in input order; counts -> the summary."""
    from .data import write_json, write_jsonl

    by_id: dict[str, dict] = {}
    for r in _done_rows(out):
        by_id.setdefault(r["id"], r)
    missing = [r["id"] for r in data.rows if r["id"] not in by_id]
    if missing:
        raise RuntimeError(f"{len(missing)} prompts missing from the shards (first: {missing[0]})")
    rows, per_source, truncated = [], defaultdict(Counter), 0
    for src_row in data.rows:
        row = dict(by_id[src_row["id"]])
        for label, counts in row.pop("_stats").items():
            per_source[label].update(counts)
        truncated += bool(row.pop("_prompt_truncated", False))
        rows.append(row)
    write_jsonl(out, rows)
    for folder in _parts_dirs(out):
        shutil.rmtree(folder)
    out.with_name(out.name + ".fingerprint").unlink(missing_ok=True)

    ks = [len(r["responses"]) for r in rows]
    names = {
        "generated": "generated",
        "kept": "kept",
        "duplicates": "duplicates_removed",
        "empty": "empty_removed",
        "failed": "failed_prompts",
    }
    summary = {
        "out": str(out),
        "prompts": len(rows),
        "responses": sum(ks),
        "k": {"min": min(ks), "mean": round(sum(ks) / len(ks), 3), "max": max(ks)},
        "rows_with_fewer_than_2_responses": sum(k < 2 for k in ks),
        "duplicates_removed": sum(c["duplicates"] for c in per_source.values()),
        "empty_removed": sum(c["empty"] for c in per_source.values()),
        "per_source": {
            label: {v: c[k] for k, v in names.items()} for label, c in per_source.items()
        },
        "prompts_truncated": truncated,
        "input": data.report.as_dict(),
        "processes": world,
        "elapsed_s": round(elapsed, 2),
    }
    write_json(side_path(out, ".summary.json"), summary)
    print(
        f"rankalign sample: {len(rows)} prompts -> {out} ({sum(ks)} responses; k min "
        f"{summary['k']['min']}, mean {summary['k']['mean']}, max {summary['k']['max']})"
    )
    for label, c in summary["per_source"].items():
        print(
            f"  {label}: generated {c['generated']}, kept {c['kept']}, duplicates removed "
            f"{c['duplicates_removed']}, empty removed {c['empty_removed']}"
            + (f", failed prompts {c['failed_prompts']}" if c["failed_prompts"] else "")
        )
    print(
        f"  removed: {summary['duplicates_removed']} exact duplicates, {summary['empty_removed']} empty "
        f"responses; {truncated} prompts cut to {cfg.max_prompt_length} tokens; "
        f"summary: {side_path(out, '.summary.json')}"
    )
    return summary
