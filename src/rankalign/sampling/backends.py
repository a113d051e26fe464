"""Where candidate responses come from: a local policy (`HFPolicy`, batched decoding in
`sampling/decoding.py`), vLLM (`VLLMPolicy`), an OpenAI-compatible endpoint (`remote_responses`)
or the input row itself (`dataset_responses`).
"""

from __future__ import annotations

from rankalign.errors import UserError
from rankalign.sampling.config import SampleConfig, SourceConfig
from rankalign.tokenization import resolve_chat_template


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


class HFPolicy:
    """A transformers causal LM: batched (left padding), KV cache, our diverse beam search."""

    def __init__(self, name: str, cfg: SampleConfig, device: str):
        from rankalign.models import load_causal_lm, load_tokenizer, resolve_model
        from rankalign.sampling.decoding import make_stop_fn

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
        # prompts are encoded as this model was trained (unless chat_template is given)
        self.chat_template = resolve_chat_template(cfg.chat_template, path)

    def encode(self, prompt) -> tuple[list[int], bool]:
        from rankalign.tokenization import encode_prompt

        ids = encode_prompt(self.tokenizer, prompt, self.chat_template)
        keep = self.cfg.max_prompt_length
        return (ids[-keep:], True) if len(ids) > keep else (ids, False)

    def generate(
        self, src: SourceConfig, ids: list[list[int]], seeds: list[list[int]]
    ) -> list[list[str]]:
        from rankalign.sampling.decoding import diverse_beam_search, sample

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

        from rankalign.models import resolve_model

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
        self.chat_template = resolve_chat_template(cfg.chat_template, resolve_model(name))

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
    from rankalign.remote import chat_many

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
