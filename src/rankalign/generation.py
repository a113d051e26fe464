"""Generation backends: one protocol for every place that generates text (sample, evaluate and
the loop's held-out step), so a stage never builds another stage's config to generate.

- `DecodeRequest`: what to decode (strategy greedy | beam | diverse-beam | sample, how many
  responses, temperature, top-p/top-k, beams, new tokens, stop strings). A stage turns its own
  options into one; the request knows nothing about stages.
- `BackendOptions`: how to load a model (dtype, device, trust_remote_code, chat template, prompt
  length, the run seed, vLLM's engine settings, an endpoint for `openai`).
- `GenerationBackend`: `encode(prompt) -> (encoded prompt, truncated)` and
  `generate(request, encoded prompts, seeds) -> per prompt, `num` texts` (or, for a remote
  backend, the Exception that ended that prompt's request). `seeds[i][j]` is response j of prompt
  i's seed (`decoding.derive_seed`); texts are returned uncut: callers cut them at the stop
  strings (`decoding.truncate_at_stop`), so every backend's responses are cut the same way.
- The registry: `BACKENDS` maps a name to a `BackendSpec` (loader, `check` of what the backend
  cannot do, refused before anything loads, and whether it runs a model here, i.e. may serve a
  `policy` source / an evaluated model). `make_backend(name, model, options)` loads one;
  `register_backend` adds one (see docs/design.md, "Adding a generation backend").

Built in: `hf` (transformers, our batched decoders in `decoding.py`), `vllm` (GPU; sampling,
greedy and plain beam search) and `openai` (an OpenAI-compatible endpoint, `remote.py`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rankalign.errors import UserError

STRATEGIES = ("greedy", "beam", "diverse-beam", "sample")


@dataclass(frozen=True)
class DecodeRequest:
    """One decoding setting (validated by the stage that built it; see `SourceConfig`)."""

    strategy: str = "greedy"
    num: int = 1  # responses per prompt
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    num_beams: int = 1
    num_beam_groups: int = 1
    diversity_penalty: float = 0.0
    length_penalty: float = 1.0  # beam strategies: score = sum log p / length ** length_penalty
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()  # early stop (an optimization: callers cut at them anyway)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy '{self.strategy}' (use {', '.join(STRATEGIES)})")
        object.__setattr__(self, "stop", tuple(self.stop))

    def settings(self) -> dict:
        """The settings that change this strategy's texts (beside max_new_tokens and stop)."""
        keys = {
            "greedy": (),
            "sample": ("temperature", "top_p", "top_k"),
            "beam": ("temperature", "num_beams", "length_penalty"),
            "diverse-beam": (
                "temperature",
                "num_beams",
                "num_beam_groups",
                "diversity_penalty",
                "length_penalty",
            ),
        }[self.strategy]
        return {"strategy": self.strategy, "num": self.num} | {k: getattr(self, k) for k in keys}

    def describe(self) -> str:
        """e.g. `sample(top_p=1.0,temp=0.8)`, `diverse-beam(beams=4,groups=4,penalty=1.0,temp=0.8)`
        (the part after `policy:` of a sample source's label, which also seeds its samples)."""
        temp = f"temp={float(self.temperature)}"
        args = []
        if self.strategy == "sample":
            args = [f"top_p={float(self.top_p)}"] + [f"top_k={self.top_k}"] * bool(self.top_k)
            args += [temp]
        elif self.strategy in ("beam", "diverse-beam"):
            args = [f"beams={self.num_beams}"]
            if self.strategy == "diverse-beam":
                args += [
                    f"groups={self.num_beam_groups}",
                    f"penalty={float(self.diversity_penalty)}",
                ]
            args += [temp] * (self.temperature != 1 or self.strategy == "diverse-beam")
            args += [f"length_penalty={float(self.length_penalty)}"] * (self.length_penalty != 1)
        return self.strategy + (f"({','.join(args)})" if args else "")


@dataclass
class BackendOptions:
    """How a backend loads its model and encodes prompts (not what it decodes)."""

    dtype: str = "float32"
    device: str = "cpu"  # resolved by the caller (`models.default_device`, the process's device)
    trust_remote_code: bool = False
    allow_pickle: bool = False
    chat_template: str | None = None  # None: as the model was trained (`resolve_chat_template`)
    max_prompt_length: int = 1024  # prompt tokens kept (cut from the left)
    seed: int = 0  # vllm: the engine's seed
    tensor_parallel_size: int = 1  # vllm
    gpu_memory_utilization: float = 0.9  # vllm
    remote: Any = None  # openai: a `remote.RemoteConfig`


class GenerationBackend(Protocol):
    """What sample and evaluate call. `tokenizer` / `chat_template` are None for a backend that
    sends text elsewhere (prompts are then not checked against a chat template here)."""

    tokenizer: Any
    chat_template: str | None

    def encode(self, prompt: str | list[dict]) -> tuple[Any, bool]:
        """The prompt as this backend takes it (token ids for a local model) and whether it was
        cut to `max_prompt_length`."""
        ...

    def generate(
        self, request: DecodeRequest, prompts: list, seeds: list[list[int]]
    ) -> list[list[str] | Exception]:
        """`request.num` texts per encoded prompt, in order (an Exception for a prompt whose
        remote request failed for good)."""
        ...

    def close(self) -> None:
        """Free the model (evaluate loads one model after another)."""
        ...


Check = Callable[[str, dict[str, DecodeRequest], int], None]


def _no_check(name: str, requests: dict[str, DecodeRequest], processes: int) -> None:
    return None


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend: `load(model, options)`, `check(name, {field: request}, processes)`
    (raises UserError naming the field, before anything loads) and `local` (runs a model on this
    machine: can be a sample run's / evaluate's `backend`)."""

    name: str
    load: Callable[[str, BackendOptions], GenerationBackend]
    check: Check = field(default=_no_check)
    local: bool = True


BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> None:
    BACKENDS[spec.name] = spec


def local_backends() -> list[str]:
    """The names a stage's `backend` option takes."""
    return [n for n, s in BACKENDS.items() if s.local]


def check_backend_name(name: str) -> None:
    """A stage's `backend` option (a ValueError, as the options' other checks)."""
    if name not in local_backends():
        raise ValueError(f"backend must be one of {', '.join(local_backends())}, got '{name}'")


def check_backend(name: str, requests: dict[str, DecodeRequest], processes: int = 1) -> None:
    """What the backend needs and cannot do, refused before anything loads."""
    BACKENDS[name].check(name, requests, processes)


def make_backend(name: str, model: str, options: BackendOptions) -> GenerationBackend:
    return BACKENDS[name].load(model, options)


class PromptEncoder:
    """A prompt as the model was trained on it (chat template or plain text), cut from the left
    to `max_length` tokens. Shared by the local backends."""

    def __init__(self, tokenizer, chat_template: str, max_length: int):
        self.tokenizer, self.chat_template, self.max_length = tokenizer, chat_template, max_length

    def __call__(self, prompt) -> tuple[list[int], bool]:
        from rankalign.tokenization import encode_prompt

        ids = encode_prompt(self.tokenizer, prompt, self.chat_template)
        keep = self.max_length
        return (ids[-keep:], True) if len(ids) > keep else (ids, False)


class HFBackend:
    """A transformers causal LM: batched (left padding), KV cache, our diverse beam search."""

    def __init__(self, name: str, options: BackendOptions):
        from rankalign.models import load_causal_lm, load_tokenizer, resolve_model
        from rankalign.tokenization import resolve_chat_template

        path = resolve_model(name)
        self.tokenizer = load_tokenizer(path, trust_remote_code=options.trust_remote_code)
        self.model = load_causal_lm(
            path,
            dtype=options.dtype,
            trust_remote_code=options.trust_remote_code,
            allow_pickle=options.allow_pickle,
            device=options.device,
        ).eval()
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos = sorted(eos)
        pad = self.tokenizer.pad_token_id  # only fills positions that the masks hide
        self.pad = pad if pad is not None else (self.eos[0] if self.eos else 0)
        # prompts are encoded as this model was trained (unless chat_template is given)
        self.chat_template = resolve_chat_template(options.chat_template, path)
        self.encode = PromptEncoder(self.tokenizer, self.chat_template, options.max_prompt_length)
        self._stop_fns: dict[tuple[str, ...], Any] = {}

    def _stop_fn(self, stop: tuple[str, ...]):
        from rankalign.decoding import make_stop_fn

        if stop not in self._stop_fns:  # building the criteria walks the vocabulary: once
            self._stop_fns[stop] = make_stop_fn(self.tokenizer, list(stop))
        return self._stop_fns[stop]

    def generate(
        self, request: DecodeRequest, ids: list[list[int]], seeds: list[list[int]]
    ) -> list[list[str]]:
        from rankalign.decoding import diverse_beam_search, sample

        r = request
        common = {
            "max_new_tokens": r.max_new_tokens,
            "eos_token_ids": self.eos,
            "pad_token_id": self.pad,
            "stop": self._stop_fn(r.stop),
        }
        if r.strategy in ("beam", "diverse-beam"):
            tokens, _ = diverse_beam_search(
                self.model,
                ids,
                num_beams=r.num_beams,
                num_beam_groups=r.num_beam_groups,
                diversity_penalty=r.diversity_penalty,
                temperature=r.temperature,
                length_penalty=r.length_penalty,
                num_return_sequences=r.num,
                **common,
            )
        else:
            tokens = sample(
                self.model,
                ids,
                num_return_sequences=r.num,
                seeds=[s for row in seeds for s in row],
                temperature=r.temperature,
                top_p=r.top_p,
                top_k=r.top_k,
                **common,
            )
        return [[self.tokenizer.decode(t, skip_special_tokens=True) for t in row] for row in tokens]

    def close(self) -> None:
        self.model = None
        gc.collect()


class VLLMBackend:
    """vLLM (GPU): sampling / greedy with per-request seeds, and vLLM's beam search (what it
    cannot do is refused by `check_vllm`)."""

    def __init__(self, name: str, options: BackendOptions):
        import vllm

        from rankalign.models import resolve_model
        from rankalign.tokenization import resolve_chat_template

        self.llm = vllm.LLM(
            model=resolve_model(name),
            dtype=options.dtype,
            seed=options.seed,
            trust_remote_code=options.trust_remote_code,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.chat_template = resolve_chat_template(options.chat_template, resolve_model(name))
        self.encode = PromptEncoder(self.tokenizer, self.chat_template, options.max_prompt_length)

    def generate(
        self, request: DecodeRequest, ids: list[list[int]], seeds: list[list[int]]
    ) -> list[list[str]]:
        from vllm import SamplingParams

        r = request
        if r.strategy == "beam":
            from vllm.sampling_params import BeamSearchParams

            params = BeamSearchParams(
                beam_width=r.num_beams, max_tokens=r.max_new_tokens, length_penalty=r.length_penalty
            )
            outs = self.llm.beam_search([{"prompt_token_ids": p} for p in ids], params)
            return [
                [
                    self.tokenizer.decode(s.tokens[len(p) :], skip_special_tokens=True)
                    for s in o.sequences[: r.num]
                ]
                for o, p in zip(outs, ids)
            ]
        prompts = [{"prompt_token_ids": p} for p in ids for _ in range(r.num)]
        params = [
            SamplingParams(
                n=1,
                temperature=r.temperature,
                top_p=r.top_p,
                top_k=r.top_k or -1,
                max_tokens=r.max_new_tokens,
                stop=list(r.stop),
                seed=s,
            )
            for row in seeds
            for s in row
        ]
        texts = [o.outputs[0].text for o in self.llm.generate(prompts, params, use_tqdm=False)]
        return [texts[i * r.num : (i + 1) * r.num] for i in range(len(ids))]

    def close(self) -> None:
        self.llm = None  # vLLM frees its GPU memory when the engine is collected (best effort)
        gc.collect()


def check_vllm(name: str, requests: dict[str, DecodeRequest], processes: int) -> None:
    """What vLLM needs (the package, one process) and cannot do (diverse beam search, beam
    search with temperature)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            f"backend '{name}' needs the vllm package (pip install vllm; needs a GPU); "
            "use backend: hf"
        )
    if processes > 1:
        raise UserError(
            "backend vllm runs as one process (vLLM uses several GPUs itself): "
            "launch without torchrun/accelerate and set tensor_parallel_size"
        )
    for where, r in requests.items():
        if r.strategy == "diverse-beam":
            raise UserError(
                "vLLM has no diverse beam search: use backend: hf for diverse-beam sources",
                field=where,
            )
        if r.strategy == "beam" and r.temperature != 1.0:
            raise UserError(
                "backend vllm: beam search with temperature is not supported", field=where
            )


class OpenAIBackend:
    """An OpenAI-compatible endpoint (`remote.chat_many`): prompts go as chat messages; a
    response's seed is best effort (servers may ignore it); a failed request is its prompt's
    Exception. `options.remote` is the endpoint (`remote.RemoteConfig`)."""

    tokenizer = None
    chat_template = None

    def __init__(self, name: str, options: BackendOptions):
        self.remote, self.desc = options.remote, f"openai:{name}"

    def encode(self, prompt) -> tuple[list[dict], bool]:
        from rankalign.remote import as_messages

        return as_messages(prompt), False

    def generate(
        self, request: DecodeRequest, prompts: list[list[dict]], seeds: list[list[int]]
    ) -> list[list[str] | Exception]:
        from rankalign.remote import chat_many

        return chat_many(
            self.remote,
            prompts,
            temperature=request.temperature,
            n=request.num,
            max_tokens=request.max_new_tokens,
            seed=[row[0] % 2**31 for row in seeds],
            desc=self.desc,
        )

    def close(self) -> None:
        return None


register_backend(BackendSpec("hf", HFBackend))
register_backend(BackendSpec("vllm", VLLMBackend, check=check_vllm))
register_backend(BackendSpec("openai", OpenAIBackend, local=False))
