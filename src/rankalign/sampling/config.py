"""Options of `rankalign sample`: the run (`SampleConfig`) and each source of candidates
(`SourceConfig`), with the RRHF Table 1 presets (BP, SP, DP, D, P) that expand into sources.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.errors import UserError
from rankalign.generation import DecodeRequest, check_backend_name
from rankalign.models import DTYPES
from rankalign.tokenization import CHAT_TEMPLATE_HELP, CHAT_TEMPLATE_MODES, HH_STOP

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
        from rankalign.config import check_options

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
        if self.kind == "openai":
            return f"openai:{self.model}(temp={float(self.temperature)})"
        who = "policy" if self.model is None else Path(self.model).name
        return f"{who}:{self.request(1, []).describe()}"

    def request(self, max_new_tokens: int, stop: list[str]) -> DecodeRequest:
        """This source's decoding (the run's max_new_tokens unless the source sets its own)."""
        return DecodeRequest(
            strategy=self.strategy if self.kind == "policy" else "sample",  # openai: sampled
            num=self.num,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            num_beams=self.num_beams or 1,
            num_beam_groups=self.num_beam_groups or 1,
            diversity_penalty=self.diversity_penalty or 0.0,
            length_penalty=self.length_penalty,
            max_new_tokens=self.max_new_tokens or max_new_tokens,
            stop=tuple(stop),
        )

    def remote_config(self):
        """The endpoint settings of an `openai` source (remote.py checks them)."""
        from rankalign.remote import RemoteConfig

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
        default=None,
        metadata={"help": "(required) input file/folder: prompts, or pairwise/HH/ranked-list rows"},
    )
    out: str = field(
        default=None, metadata={"help": "(required) output JSONL of ranked lists (no scores)"}
    )
    model: str = field(default="smollm2", metadata={"help": "policy model: folder or hub name"})
    preset: str | None = field(
        default=None,
        metadata={
            "help": "paper Table 1 setting: BP (beam+dataset), SP (top-p+dataset), DP (diverse beam+dataset), "
            "D (diverse beam), P (dataset only)",
            "choices": tuple(PRESETS),
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
    chat_template: str | None = field(
        default=None,
        metadata={"help": CHAT_TEMPLATE_HELP, "choices": CHAT_TEMPLATE_MODES},
    )
    backend: str = field(
        default="hf",
        metadata={"help": "generation backend of policy sources: hf (transformers) | vllm"},
    )
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
    dtype: str = field(
        default="float32",
        metadata={"help": "float32 | bfloat16 | float16", "choices": tuple(DTYPES)},
    )
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
            "help": "a remote request failed after retries: fail (stop; rerun resumes) | skip (count it)",
            "choices": ("fail", "skip"),
        },
    )
    shard_size: int = field(default=64, metadata={"help": "rows per output shard", "check": ">= 1"})
    max_rows: int | None = field(
        default=None,
        metadata={"aliases": ["--limit"], "help": "only the first N prompt rows", "check": ">= 1"},
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output"})

    def __post_init__(self):
        for name in ("prompts", "out"):
            if not getattr(self, name):
                raise ValueError(f"the option --{name} is required")
        from rankalign.config import load_yaml_text

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
        check_backend_name(self.backend)
        if self.tensor_parallel_size > 1 and self.backend != "vllm":
            raise ValueError("tensor_parallel_size > 1 needs backend: vllm")
        if self.on_remote_error not in ("fail", "skip"):
            raise ValueError("on_remote_error must be fail or skip")
        if self.chat_template is not None and self.chat_template not in CHAT_TEMPLATE_MODES:
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
