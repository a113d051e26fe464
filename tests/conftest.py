"""Shared fixtures: tiny randomly initialized models and a tokenizer built offline in seconds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

# transformers binds its log handler to the sys.stderr of the moment it first logs: bind it now,
# to the session's stream, not to one test's captured stream that is closed when the test ends
# (a later warning would then print "--- Logging error ---" into another test's stderr)
hf_logging.get_logger("transformers")


def require(available, reason: str):
    """Skip a test whose tool is missing on a developer's machine, but fail it in CI
    (`CI=true`), where .ci/run installs every such tool: a skip there would hide the very
    regression the test guards."""
    if available:
        return available
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI installs it: a skip here would hide a regression)")
    pytest.skip(reason)


def chromium() -> str:
    """Debian's headless Chromium (`apt-get install -y chromium`, as .ci/run does)."""
    import shutil

    found = next(
        (p for b in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(b))),
        None,
    )
    return require(found, "chromium is not installed (Debian: apt-get install -y chromium)")


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "the movie was great and i loved it",
    "the film was terrible and boring",
    "Human: what is a good movie? Assistant: a great one with a happy ending",
    "i think this is wonderful, amazing, fantastic work",
    "this is bad, awful and sad",
    "hello there, how are you today? fine thanks",
] * 4


def build_tokenizer(add_bos: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


def build_gpt2(vocab_size: int, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A saved tiny Llama + tokenizer folder, loadable by path like any real model."""
    path = tmp_path_factory.mktemp("tiny-llama")
    build_llama(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny-gpt2")
    build_gpt2(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
