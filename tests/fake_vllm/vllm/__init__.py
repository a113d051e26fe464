"""A stand-in for vLLM (which needs a GPU) with the API rankalign calls: it records what it is
asked and answers with texts that name the request, so tests can check how `backend: vllm`
builds requests and maps answers back to prompts. It generates nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from .sampling_params import SamplingParams

CREATED: list[dict] = []  # LLM(...) keyword arguments, one dict per engine


@dataclass
class _Completion:
    text: str


@dataclass
class _RequestOutput:
    outputs: list[_Completion]


@dataclass
class _BeamSequence:
    tokens: list[int]  # as vLLM: the prompt's tokens, then the generated ones


@dataclass
class _BeamOutput:
    sequences: list[_BeamSequence] = field(default_factory=list)


class LLM:
    def __init__(self, model: str, **kwargs):
        from transformers import AutoTokenizer

        CREATED.append({"model": model, **kwargs})
        self._tokenizer = AutoTokenizer.from_pretrained(model)

    def get_tokenizer(self):
        return self._tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True):
        assert len(prompts) == len(sampling_params)
        return [
            _RequestOutput(
                [_Completion(f" len{len(p['prompt_token_ids'])} seed{sp.seed} t{sp.temperature}")]
            )
            for p, sp in zip(prompts, sampling_params)
        ]

    def beam_search(self, prompts, params):
        words = [self._tokenizer.encode(f" beam{i}", add_special_tokens=False) for i in range(8)]
        return [
            _BeamOutput(
                [_BeamSequence(p["prompt_token_ids"] + w) for w in words[: params.beam_width]]
            )
            for p in prompts
        ]


__all__ = ["LLM", "SamplingParams", "CREATED"]
