"""Rewards computed by models: a sequence-classification reward model (`rm:`), a causal LM with
a scalar head (`causal-rm:`), a pairwise preference model (`preference:`, both orders averaged)
and the policy's own length-normalized log-prob (`policy-logprob:`, RRHF §3.2).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rankalign.errors import UserError
from rankalign.models import DTYPES, default_device, torch_dtype
from rankalign.reward_inputs import (
    answer_tokens,
    encode_rm_input,
    preference_prompt,
    prepare_rm_tokenizer,
    read_template,
    rm_format,
    rm_text,
    trained_with,
)
from rankalign.scoring.rewards.base import (
    Option,
    Reward,
    Schema,
    flat_index,
    length_batches,
    progress,
    unflat,
)
from rankalign.tokenization import CHAT_TEMPLATE_MODES, resolve_chat_template

# the options every model reward takes (the command's own options are their defaults)
MODEL = {
    "path": Option(str, role="model", help="model folder or hub name"),
    "batch_size": Option(int, 8, range=">= 1"),
    "max_length": Option(int, 1024, range=">= 2"),
    "dtype": Option(str, "float32", choices=DTYPES),
    "device": Option(str, "auto"),
    "trust_remote_code": Option(bool, False),
    "allow_pickle": Option(bool, False),
}
CHAT_TEMPLATE = Option(str, choices=CHAT_TEMPLATE_MODES)


class ModelReward(Reward):
    """Shared loading of a local or hub model (safe defaults: safetensors, no remote code)."""

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        from rankalign.models import check_weights_format, load_tokenizer, resolve_model

        self.path = resolve_model(self.opt["path"])
        check_weights_format(self.path, bool(self.opt["allow_pickle"]))
        self.batch_size = int(self.opt["batch_size"])
        self.max_length = int(self.opt["max_length"])
        self.dtype = torch_dtype(self.opt["dtype"])
        self.device = default_device(self.opt["device"])
        self.tokenizer = load_tokenizer(
            self.path, trust_remote_code=bool(self.opt.get("trust_remote_code"))
        )

    def _from_pretrained(self, auto_class):
        try:
            return (
                auto_class.from_pretrained(
                    self.path,
                    dtype=self.dtype,
                    trust_remote_code=bool(self.opt.get("trust_remote_code")),
                    use_safetensors=None if self.opt.get("allow_pickle") else True,
                )
                .to(self.device)
                .eval()
            )
        except (OSError, ValueError) as e:
            raise UserError(
                f"cannot load model: {str(e).splitlines()[0][:300]}", file=self.path
            ) from None


class SequenceClassifierReward(ModelReward):
    """`rm:PATH`: an AutoModelForSequenceClassification (OpenAssistant-style reward models, and
    our own Bradley-Terry models). The value is the model's own pooled logit (last non-pad token
    for decoders, [CLS] for encoders), so it equals a plain forward pass or an HF pipeline.
    Inputs are sorted by length and right-padded; `label=NAME|INDEX` picks a logit of a
    multi-class model (e.g. POSITIVE of a sentiment classifier), `output=prob` its softmax."""

    schema = Schema(
        "rm",
        {
            **MODEL,
            # no default: the format the model was trained with (rankalign_reward_model.json)
            "format": Option(str, choices=("auto", "chat", "concat", "pair")),
            "label": Option(str),
            "output": Option(str, "logit", choices=("logit", "prob")),
        },
        positional="path",
        example="rm:PATH",
    )

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        from transformers import AutoModelForSequenceClassification

        self.model = self._from_pretrained(AutoModelForSequenceClassification)
        config = self.model.config
        # batching needs a pad id, and the model finds its last token by that same id
        prepare_rm_tokenizer(self.tokenizer, config)
        self.format = self.opt.get("format") or trained_with(self.path).get("format", "auto")
        self.prob = self.opt["output"] == "prob"
        label = self.opt.get("label")
        if label is None:
            if config.num_labels != 1:
                raise UserError(
                    f"the model has {config.num_labels} labels "
                    f"({', '.join(map(str, config.id2label.values()))}); pick one "
                    "with label=NAME",
                    file=self.path,
                )
            self.label = 0
        elif str(label).isdigit():
            self.label = int(label)
        else:
            names = {str(v).lower(): int(k) for k, v in config.id2label.items()}
            if str(label).lower() not in names:
                raise UserError(f"no label '{label}' (labels: {', '.join(names)})", file=self.path)
            self.label = names[str(label).lower()]

    def _encode(self, prompt, response):
        # the one reward-model input contract, shared with bt-reward training
        return encode_rm_input(self.tokenizer, prompt, response, self.format, self.max_length)

    def score(self, rows):
        import torch

        flat = flat_index(rows)
        enc = [self._encode(rows[r]["prompt"], rows[r]["responses"][i]) for r, i in flat]
        values: list[float] = [0.0] * len(enc)
        batches = length_batches([len(e["input_ids"]) for e in enc], self.batch_size)
        for batch in progress(batches, self.name):
            inputs = self.tokenizer.pad([enc[j] for j in batch], return_tensors="pt").to(
                self.device
            )
            with torch.inference_mode():
                logits = self.model(**inputs).logits.float()
            out = logits.softmax(-1)[:, self.label] if self.prob else logits[:, self.label]
            for j, v in zip(batch, out.tolist()):
                values[j] = v
        return unflat(values, rows)


# ("summary.weight" also matches TRL's "v_head.summary.weight")
HEAD_KEYS = (
    "v_head.weight",
    "score.weight",
    "summary.weight",
    "value_head.weight",
    "reward_head.weight",
)


def load_scalar_head_model(path: str, dtype, trust_remote_code: bool = False):
    """A causal-LM body (AutoModel) plus a linear scalar head, from one checkpoint folder.

    The RRHF paper's reward model (Dahoas/gptj-rm-static) and TRL value-head checkpoints store
    the body under a wrapper prefix (`transformer.`, `model.`, `pretrained_model.` ...) next to
    `v_head.weight`; the prefix is found by matching key suffixes against the body's own keys.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    folder = Path(path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(
            snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        )
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError("no .safetensors weights in the folder", file=folder)
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    head = next((k for h in HEAD_KEYS for k in state if k == h or k.endswith("." + h)), None)
    if head is None:
        raise UserError(
            f"no scalar head in the checkpoint (looked for {', '.join(HEAD_KEYS)})", file=folder
        )
    weight, bias = state.pop(head).float(), state.pop(head[: -len("weight")] + "bias", None)
    if weight.numel() != weight.shape[-1] or (bias is not None and bias.numel() != 1):
        raise UserError(
            f"head '{head}' has shape {tuple(weight.shape)}; expected one output", file=folder
        )
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    body = AutoModel.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    wanted = set(body.state_dict())
    prefixes = Counter()
    for key in state:
        parts = key.split(".")
        prefixes.update(
            ".".join(parts[:j]) for j in range(len(parts)) if ".".join(parts[j:]) in wanted
        )
    prefix = prefixes.most_common(1)[0][0] if prefixes else ""
    cut = len(prefix) + 1 if prefix else 0
    mapped = {k[cut:]: v for k, v in state.items() if k.startswith(prefix) and k[cut:] in wanted}
    missing = sorted(wanted - set(mapped))
    if missing:
        raise UserError(
            f"checkpoint does not match the {config.model_type} body: {len(missing)} "
            f"weights missing (first: {missing[0]})",
            file=folder,
        )
    body.load_state_dict(mapped, strict=False)
    return body, weight.reshape(-1), (bias.float().reshape(()) if bias is not None else None)


class CausalHeadReward(ModelReward):
    """`causal-rm:PATH`: a causal LM with a scalar head, read at the last (EOS) token.

    The text is formatted like `rm:` and, as in the RRHF/trlx reward-model code, EOS is appended
    (`append_eos=false` to turn off); the hidden state of the last real token goes through the
    head in fp32. Right padding keeps causal attention exact for each real token. No
    `format=pair`: a causal LM reads one text (pair is for encoders)."""

    schema = Schema(
        "causal-rm",
        {
            **MODEL,
            "format": Option(str, "auto", choices=("auto", "chat", "concat")),
            "append_eos": Option(bool, True),
        },
        positional="path",
        example="causal-rm:PATH",
    )

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        body, w, b = load_scalar_head_model(
            self.path, self.dtype, bool(self.opt.get("trust_remote_code"))
        )
        self.body = body.to(self.device).eval()
        self.w, self.b = w.to(self.device), (b.to(self.device) if b is not None else None)
        self.format = self.opt["format"]
        self.append_eos = bool(self.opt["append_eos"])

    def _ids(self, prompt, response) -> list[int]:
        fmt = rm_format(self.tokenizer, prompt, self.format)  # never pair (not a choice)
        text = rm_text(self.tokenizer, prompt, response, fmt)
        ids = self.tokenizer(text, add_special_tokens=fmt != "chat").input_ids
        eos = self.tokenizer.eos_token_id
        if self.append_eos and eos is not None and (not ids or ids[-1] != eos):
            ids = ids + [eos]
        return ids[-self.max_length :]  # keep the end: the score is read there

    def score(self, rows):
        import torch

        flat = flat_index(rows)
        ids = [self._ids(rows[r]["prompt"], rows[r]["responses"][i]) for r, i in flat]
        values: list[float] = [0.0] * len(ids)
        pad = self.tokenizer.pad_token_id or 0
        for batch in progress(length_batches([len(x) for x in ids], self.batch_size), self.name):
            width = max(len(ids[j]) for j in batch)
            inp = torch.tensor([ids[j] + [pad] * (width - len(ids[j])) for j in batch])
            attn = torch.tensor([[1] * len(ids[j]) + [0] * (width - len(ids[j])) for j in batch])
            with torch.inference_mode():
                hidden = self.body(
                    input_ids=inp.to(self.device), attention_mask=attn.to(self.device)
                ).last_hidden_state
                last = hidden[torch.arange(len(batch)), attn.sum(1).to(self.device) - 1].float()
                out = last @ self.w + (self.b if self.b is not None else 0.0)
            for j, v in zip(batch, out.tolist()):
                values[j] = v
        return unflat(values, rows)


class PreferenceReward(ModelReward):
    """`preference:PATH`: P(a > b) from the next-token logits of "A" vs "B", both orders averaged
    to cancel position bias: P(i > j) = (P_A(i, j) + 1 - P_A(j, i)) / 2, so P(j > i) = 1 - P(i > j).
    A list of k responses is ranked by wins against the others: r_i = mean_{j != i} P(i > j)
    (k (k-1) forward passes per list; a single response gets 0.5).

    It sees a row's responses together (`pairwise`) and cancels position bias itself, so a win
    rate asks it once (not `both_orders`)."""

    schema = Schema(
        "preference",
        {**MODEL, "template": Option(str, role="file"), "chat_template": CHAT_TEMPLATE},
        positional="path",
        pairwise=True,
        example="preference:PATH",
    )

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        from transformers import AutoModelForCausalLM

        self.model = self._from_pretrained(AutoModelForCausalLM)
        meta = trained_with(self.path)
        self.template = read_template(None)
        tfile = self.opt.get("template") or (
            meta.get("template") and Path(self.path) / meta["template"]
        )
        if tfile:
            self.template = read_template(tfile)
        # an explicit option wins over what the model was trained with, which wins over --chat_template
        self.chat = (
            spec.options.get("chat_template")
            or meta.get("chat_template")
            or self.opt.get("chat_template")
            or "auto"
        )
        self.token_a, self.token_b = answer_tokens(self.tokenizer, self.path)

    def prob_first(self, texts: list[str]) -> list[float]:
        """P("A") / (P("A") + P("B")) at the next token after each text."""
        import torch

        special = self.chat == "never" or not self.tokenizer.chat_template
        ids = [
            self.tokenizer(t, add_special_tokens=special).input_ids[-self.max_length :]
            for t in texts
        ]
        pad = self.tokenizer.pad_token_id or 0
        out: list[float] = [0.0] * len(ids)
        for batch in progress(length_batches([len(x) for x in ids], self.batch_size), self.name):
            width = max(len(ids[j]) for j in batch)
            # left padding with explicit positions: the last position is every row's next token
            inp = torch.tensor([[pad] * (width - len(ids[j])) + ids[j] for j in batch])
            attn = torch.tensor([[0] * (width - len(ids[j])) + [1] * len(ids[j]) for j in batch])
            pos = (attn.cumsum(1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=inp.to(self.device),
                    attention_mask=attn.to(self.device),
                    position_ids=pos.to(self.device),
                    logits_to_keep=1,
                ).logits[:, -1]
            pa = logits.float()[:, [self.token_a, self.token_b]].softmax(-1)[:, 0]
            for j, v in zip(batch, pa.tolist()):
                out[j] = v
        return out

    def score(self, rows):
        pairs = [
            (r, i, j)
            for r, row in enumerate(rows)
            for i in range(len(row["responses"]))
            for j in range(len(row["responses"]))
            if i != j
        ]
        texts = [
            preference_prompt(
                self.tokenizer,
                rows[r]["prompt"],
                rows[r]["responses"][i],
                rows[r]["responses"][j],
                self.template,
                self.chat,
            )
            for r, i, j in pairs
        ]
        p_first = dict(zip(pairs, self.prob_first(texts)))
        out = []
        for r, row in enumerate(rows):
            k = len(row["responses"])
            win = [
                [(p_first[r, i, j] + 1 - p_first[r, j, i]) / 2 for j in range(k) if j != i]
                for i in range(k)
            ]
            out.append([sum(w) / len(w) if w else 0.5 for w in win])
        return out


class PolicyLogprob(ModelReward):
    """`policy-logprob:PATH`: the policy as reward model, p_i = logp(y_i | x) / |y_i|
    (RRHF paper §3.2 and Table 5: the length-normalized log-prob RRHF itself ranks with)."""

    schema = Schema(
        "policy-logprob",
        {
            **MODEL,
            "chat_template": CHAT_TEMPLATE,
            "min_response_tokens": Option(int, 64, range=">= 0"),
        },
        positional="path",
        example="policy-logprob:PATH",
    )

    def __init__(self, spec, defaults):
        super().__init__(spec, defaults)
        from transformers import AutoModelForCausalLM

        self.model = self._from_pretrained(AutoModelForCausalLM)

    def score(self, rows):
        from rankalign.logprobs import rows_logps  # torch: only when a policy scores

        logps, lengths, _ = rows_logps(
            self.model,
            self.tokenizer,
            [r["prompt"] for r in rows],
            [r["responses"] for r in rows],
            max_length=self.max_length,
            min_response_tokens=int(self.opt["min_response_tokens"]),
            # given (spec, else the stage's option), else as the policy was trained
            chat_template=resolve_chat_template(self.opt.get("chat_template"), self.path),
            batch_size=self.batch_size,
            desc=self.name,
        )
        return [[lp / max(n, 1) for lp, n in zip(*row)] for row in zip(logps, lengths)]
