"""Greedy (or sampled) generation for evaluation, through a generation backend (`generation.py`,
the `backend` option: hf by default, vllm), with a per-entry cache in OUT/generations/ keyed by
every setting that changes the text.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from rankalign.config import same_fields
from rankalign.data import (
    write_jsonl,
)
from rankalign.errors import UserError
from rankalign.evaluation.config import EvaluateConfig
from rankalign.evaluation.entries import Entry
from rankalign.generation import BackendOptions, DecodeRequest, make_backend
from rankalign.models import default_device
from rankalign.tokenization import resolve_chat_template


class Generator:
    """An entry's model behind the configured backend (its decoders, stop strings and prompt
    encoding, as `rankalign sample` generates).

    The model is loaded on first use: a rerun whose generations are all cached loads nothing."""

    def __init__(self, entry: Entry, cfg: EvaluateConfig):
        self.cfg, self.entry, self._policy, self._scorer = cfg, entry, None, None

    @property
    def policy(self):
        """The generation backend (loaded on first use)."""
        if self._policy is None:
            c = self.cfg
            options = same_fields(BackendOptions, c, device=default_device(c.device))
            self._policy = make_backend(c.backend, self.entry.path, options)
        return self._policy

    def load(self) -> None:
        """Load the model now (it is otherwise loaded on first use)."""
        _ = self.policy

    @property
    def model(self):
        """The transformers model (p_i on pairs): the backend's own when it has one, else
        loaded apart (vllm's engine gives no log-probs of given responses)."""
        if getattr(self.policy, "model", None) is not None:
            return self.policy.model
        if self._scorer is None:
            from rankalign.models import load_causal_lm, resolve_model

            c = self.cfg
            self._scorer = load_causal_lm(
                resolve_model(self.entry.path),
                dtype=c.dtype,
                trust_remote_code=c.trust_remote_code,
                allow_pickle=c.allow_pickle,
                device=default_device(c.device),
            ).eval()
        return self._scorer

    @property
    def tokenizer(self):
        return self.policy.tokenizer

    def label(self, num: int, request: DecodeRequest | None = None) -> str:
        """What seeds the samples, as a sample source's label (`policy:sample(top_p=...)`)."""
        return f"policy:{(request or self.cfg.request(num)).describe()}"

    def generate(self, rows: list[dict], num: int, request: DecodeRequest | None = None):
        """Yield (row indices, their `num` responses) batch by batch; prompts of similar length
        share a batch; responses are cut at the first stop string. `request`: how to decode
        (default: `cfg.request(num)`; evaluation samples: `cfg.eval_request()`)."""
        from rankalign.decoding import derive_seed, truncate_at_stop

        request = request or self.cfg.request(num)
        label = self.label(num, request)
        ids = [self.policy.encode(row["prompt"])[0] for row in rows]
        order = sorted(range(len(rows)), key=lambda i: -len(ids[i]))
        for s in range(0, len(order), self.cfg.batch_size):
            idx = order[s : s + self.cfg.batch_size]
            seeds = [
                [derive_seed(self.cfg.seed, label, rows[i]["id"], j) for j in range(num)]
                for i in idx
            ]
            texts = self.policy.generate(request, [ids[i] for i in idx], seeds)
            for i, t in zip(idx, texts):
                if isinstance(t, Exception):  # a backend that reports failures per prompt
                    raise UserError(f"{self.entry.name}: prompt '{rows[i]['id']}': {t}")
            yield idx, [[truncate_at_stop(x, self.cfg.stop) for x in t] for t in texts]

    def settings_key(self, num: int, request: DecodeRequest | None = None) -> str:
        """Every setting that changes the texts (the keys of runs before backends existed are
        kept: `backend` enters only when it is not hf)."""
        from rankalign.models import model_fingerprint

        c = self.cfg
        data = {
            "model": model_fingerprint(self.entry.path),
            "source": {"kind": "policy", **(request or c.request(num)).settings()},
            "max_new_tokens": c.max_new_tokens,
            "stop": c.stop,
            "seed": c.seed,
            "max_prompt_length": c.max_prompt_length,
            "chat_template": resolve_chat_template(c.chat_template, self.entry.path),
            "dtype": c.dtype,
        }
        if c.backend != "hf":
            data["backend"] = c.backend
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def close(self):
        if self._policy is not None:
            self._policy.close()
        self._policy = self._scorer = None


def cached_generate(
    gen: Generator,
    rows: list[dict],
    num: int,
    path: Path,
    cfg: EvaluateConfig,
    desc: str,
    request: DecodeRequest | None = None,
) -> list[list[str]]:
    """Generations for `rows`, reusing the rows of `path` made with the same settings.

    Missing rows are generated batch by batch; the file is rewritten atomically every few
    batches, so an interrupted run keeps what it finished and a rerun only generates the rest.
    """
    key = gen.settings_key(num, request)
    done: dict[str, list[str]] = {}
    if path.is_file() and not cfg.regenerate:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:  # a damaged cache line: generated again
                continue
            if (
                isinstance(rec, dict)
                and rec.get("settings") == key
                and isinstance(rec.get("id"), str)
                and isinstance(rec.get("responses"), list)
            ):
                done[rec["id"]] = rec["responses"]
    todo = [row for row in rows if row["id"] not in done]
    if done:
        print(
            f"rankalign evaluate: {gen.entry.name}: {len(rows) - len(todo)} of {len(rows)} "
            f"prompts from the cache {path}",
            file=sys.stderr,
        )
    from tqdm.auto import tqdm

    def save():
        write_jsonl(
            path,
            [
                {
                    "id": r["id"],
                    "prompt": r["prompt"],
                    "responses": done[r["id"]],
                    "model": gen.entry.spec,
                    "settings": key,
                }
                for r in rows
                if r["id"] in done
            ],
        )

    if not todo:
        return [done[row["id"]] for row in rows]
    gen.load()  # the model's own loading bar must not nest inside ours (`[A` in logs)
    with tqdm(total=len(todo), desc=desc, unit="prompt") as bar:
        for b, (idx, responses) in enumerate(gen.generate(todo, num, request)):
            for i, resp in zip(idx, responses):
                done[todo[i]["id"]] = resp
            bar.update(len(idx))
            if b % 4 == 3:  # commit every few batches: an interrupted run keeps them
                save()
    save()
    return [done[row["id"]] for row in rows]
