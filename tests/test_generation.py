"""The generation backend protocol (`rankalign.generation`): the HF backend decodes exactly as
transformers / our decoders do, evaluate keeps its cache keys and seeds, `evaluate --backend
vllm` runs (against tests/fake_vllm), and a backend registered from outside is used by sample
and evaluate alike."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

import rankalign
from rankalign import cli
from rankalign.decoding import derive_seed, sample, truncate_at_stop
from rankalign.evaluation.config import EvaluateConfig
from rankalign.evaluation.entries import Entry
from rankalign.evaluation.generate import Generator
from rankalign.generation import (
    BACKENDS,
    BackendOptions,
    BackendSpec,
    DecodeRequest,
    PromptEncoder,
    make_backend,
)
from rankalign.models import load_causal_lm, model_fingerprint
from rankalign.sampling.config import SourceConfig
from rankalign.tokenization import HH_STOP, resolve_chat_template

PROMPTS = ["the movie was", "hello there, how are you today?", "i think"]


def _prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS))
    )
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_hf_backend_greedy_is_token_identical_to_transformers_and_the_sample_stage(
    tmp_path, tiny_model_dir
):
    """Greedy through the protocol == transformers' greedy generate (no cache tricks, one
    prompt at a time) == what `rankalign sample` writes for a greedy source."""
    backend = make_backend("hf", tiny_model_dir, BackendOptions(chat_template="never"))
    ids = [backend.encode(p)[0] for p in PROMPTS]
    request = DecodeRequest("greedy", 1, 0.0, max_new_tokens=8)
    texts = backend.generate(request, ids, [[0]] * len(ids))
    model = load_causal_lm(tiny_model_dir).eval()
    for prompt_ids, got in zip(ids, texts):
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt_ids]), max_new_tokens=8, do_sample=False, pad_token_id=0
            )
        new = out[0, len(prompt_ids) :].tolist()
        new = new[: min([new.index(e) for e in backend.eos if e in new] + [len(new)])]
        assert got == [backend.tokenizer.decode(new, skip_special_tokens=True)]

    out = tmp_path / "c.jsonl"
    argv = ["sample", "--prompts", str(_prompts(tmp_path)), "--out", str(out)]
    argv += ["--model", tiny_model_dir, "--max_new_tokens", "8", "--chat_template", "never"]
    argv += ["--sources", "[{kind: policy, strategy: greedy, num: 1}]"]
    assert cli.main(argv) == 0  # (its stop strings stop early; both are cut at them after)
    cut = [truncate_at_stop(t[0], list(HH_STOP)) for t in texts]
    assert [r["responses"] for r in _rows(out)] == [[c] if c else [] for c in cut]


def test_hf_backend_samples_with_each_rows_seed(tiny_model_dir):
    """Seeds reach the decoder row by row: the protocol's sample == `decoding.sample`."""
    backend = make_backend("hf", tiny_model_dir, BackendOptions(chat_template="never"))
    ids = [backend.encode(p)[0] for p in PROMPTS]
    seeds = [[derive_seed(1, "x", i, j) for j in range(2)] for i in range(len(ids))]
    request = DecodeRequest("sample", 2, 0.9, top_p=0.95, max_new_tokens=6)
    got = backend.generate(request, ids, seeds)
    tokens = sample(
        backend.model,
        ids,
        num_return_sequences=2,
        max_new_tokens=6,
        seeds=[s for row in seeds for s in row],
        temperature=0.9,
        top_p=0.95,
        eos_token_ids=backend.eos,
        pad_token_id=backend.pad,
    )
    assert got == [
        [backend.tokenizer.decode(t, skip_special_tokens=True) for t in r] for r in tokens
    ]


def test_prompt_encoder_cuts_from_the_left(tokenizer):
    enc = PromptEncoder(tokenizer, "never", 3)
    full = tokenizer("hello there, how are you today?").input_ids
    assert enc("hello there, how are you today?") == (full[-3:], True)
    assert PromptEncoder(tokenizer, "never", 100)("hi") == (tokenizer("hi").input_ids, False)


@pytest.mark.parametrize(
    ("source", "label"),
    [
        ({"strategy": "greedy", "num": 1}, "policy:greedy"),
        ({"strategy": "sample", "temperature": 0.8}, "policy:sample(top_p=1.0,temp=0.8)"),
        ({"strategy": "top-k", "top_k": 5}, "policy:sample(top_p=1.0,top_k=5,temp=1.0)"),
        ({"strategy": "beam", "num_beams": 4}, "policy:beam(beams=4)"),
        (
            {"strategy": "beam", "num": 2, "temperature": 0.5, "length_penalty": 2},
            "policy:beam(beams=2,temp=0.5,length_penalty=2.0)",
        ),
        (
            {"strategy": "diverse-beam", "num_beams": 4, "temperature": 0.8},
            "policy:diverse-beam(beams=4,groups=4,penalty=1.0,temp=0.8)",
        ),
    ],
)
def test_source_labels_written_from_the_request(source, label):
    """The label (which also seeds a source's samples) as before requests existed."""
    assert SourceConfig(kind="policy", **source).label() == label


def test_evaluate_cache_keys_and_seeds_are_those_of_before(tmp_path, tiny_model_dir):
    """The generation cache key and the seeds equal the ones evaluate computed through a
    throwaway sample source (SourceConfig) before the protocol: old caches stay valid."""
    cfg = EvaluateConfig(model=[tiny_model_dir], prompts="p.jsonl", temperature=0.7, seed=3)
    gen = Generator(Entry("policy", tiny_model_dir, "model", tiny_model_dir), cfg)  # not loaded
    for num, src in (
        (1, SourceConfig(kind="policy", strategy="greedy", num=1)),
        (4, SourceConfig(kind="policy", strategy="sample", num=4, temperature=0.7, top_p=1.0)),
    ):
        data = {
            "model": model_fingerprint(tiny_model_dir),
            "source": src.as_dict(),
            "max_new_tokens": 128,
            "stop": cfg.stop,
            "seed": 3,
            "max_prompt_length": 1024,
            "chat_template": resolve_chat_template(None, tiny_model_dir),
            "dtype": "float32",
        }
        old = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        assert gen.settings_key(num) == old
        assert gen.label(num) == src.label()
    hf_key = gen.settings_key(1)
    cfg.backend = "vllm"  # another backend's texts are not served from the hf cache
    assert gen.settings_key(1) != hf_key


@pytest.fixture
def fake_vllm(monkeypatch):
    for name in ("vllm", "vllm.sampling_params"):  # forgotten after the test
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fake_vllm"))
    import vllm

    vllm.CREATED.clear()
    yield vllm
    for name in ("vllm", "vllm.sampling_params"):  # the stand-in must not outlive the test
        sys.modules.pop(name, None)


def test_evaluate_with_the_vllm_backend(tmp_path, tiny_model_dir, fake_vllm):
    """`evaluate --backend vllm` (stand-in vLLM): one engine per model, greedy requests at
    temperature 0 and --num_samples requests at the sampling temperature, each with the seed
    evaluate derives, and answers back to their prompts."""
    prompts, out = _prompts(tmp_path), tmp_path / "eval"
    argv = ["evaluate", "--model", f"policy={tiny_model_dir}", "--prompts", str(prompts)]
    argv += ["--reward", "length:lambda=0.01,unit=chars", "--out", str(out), "--seed", "4"]
    argv += ["--backend", "vllm", "--num_samples", "2", "--ppl_model", "none", "--report", "false"]
    assert cli.main(argv) == 0
    [engine] = fake_vllm.CREATED
    assert engine["model"] == tiny_model_dir and engine["seed"] == 4
    enc = PromptEncoder(
        fake_vllm.LLM(tiny_model_dir).get_tokenizer(),
        resolve_chat_template(None, tiny_model_dir),
        1024,
    )
    greedy = _rows(out / "generations" / "policy.jsonl")
    samples = _rows(out / "samples" / "policy.jsonl")
    label = "policy:sample(top_p=1.0,temp=0.8)"
    for i, (g, s) in enumerate(zip(greedy, samples)):
        n = len(enc(PROMPTS[i])[0])
        assert g["responses"] == [f"len{n} seed{derive_seed(4, 'policy:greedy', f'p{i}', 0)} t0.0"]
        assert s["responses"] == [
            f"len{n} seed{derive_seed(4, label, f'p{i}', j)} t0.8" for j in range(2)
        ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["policy"]["n"] == len(PROMPTS)


def test_evaluate_backend_vllm_without_the_package_is_refused(
    tmp_path, tiny_model_dir, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "vllm", None)  # absent, whether or not it is installed
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", tiny_model_dir, "--prompts", str(_prompts(tmp_path))]
    argv += ["--reward", "length:lambda=0.01", "--out", str(out), "--backend", "vllm"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "needs the vllm package" in err and len(err.splitlines()) == 1, err
    assert not out.exists()
    assert cli.main(argv[:-1] + ["nope"]) == 2
    assert "backend must be one of hf, vllm, got 'nope'" in capsys.readouterr().err


class EchoBackend:
    """A minimal third backend: no tokenizer, text prompts, answers that name the request."""

    tokenizer = None
    chat_template = None
    loaded: list[str] = []

    def __init__(self, model: str, options: BackendOptions):
        EchoBackend.loaded.append(model)

    def encode(self, prompt):
        return str(prompt), False

    def generate(self, request, prompts, seeds):
        return [
            [f"echo {p[:5]} {request.strategy} {s % 1000}" for s in row]
            for p, row in zip(prompts, seeds)
        ]

    def close(self):
        pass


@pytest.fixture
def echo(monkeypatch):
    monkeypatch.setitem(BACKENDS, "echo", BackendSpec("echo", EchoBackend))
    EchoBackend.loaded.clear()
    return EchoBackend


def test_a_registered_backend_serves_sample_and_evaluate(tmp_path, tiny_model_dir, echo):
    prompts = _prompts(tmp_path)
    out = tmp_path / "c.jsonl"
    argv = ["sample", "--prompts", str(prompts), "--out", str(out), "--model", tiny_model_dir]
    argv += ["--backend", "echo", "--seed", "2", "--sources", "[{kind: policy, num: 2}]"]
    assert cli.main(argv) == 0
    label = "policy:sample(top_p=1.0,temp=1.0)"
    for i, row in enumerate(_rows(out)):
        seeds = [derive_seed(2, 0, f"p{i}", j) % 1000 for j in range(2)]
        assert row["responses"] == [f"echo {PROMPTS[i][:5]} sample {s}" for s in seeds]
        assert row["sources"] == [label, label]
    assert echo.loaded == [tiny_model_dir]

    metrics = rankalign.evaluate(
        model=[f"policy={tiny_model_dir}"],
        prompts=str(prompts),
        reward=["length:lambda=0.01,unit=chars"],
        out=str(tmp_path / "eval"),
        backend="echo",
        ppl_model="none",
        seed=5,
        report=False,
    ).metrics
    greedy = _rows(tmp_path / "eval" / "generations" / "policy.jsonl")
    for i, g in enumerate(greedy):
        seed = derive_seed(5, "policy:greedy", f"p{i}", 0) % 1000
        assert g["responses"] == [f"echo {PROMPTS[i][:5]} greedy {seed}"]
    assert metrics["models"]["policy"]["n"] == len(PROMPTS)
    assert echo.loaded == [tiny_model_dir, tiny_model_dir]
