"""Greedy (or sampled) generation for evaluation, through the sample stage's HF policy, with a
per-entry cache in OUT/generations/ keyed by every setting that changes the text.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
from pathlib import Path

from rankalign.data import (
    write_jsonl,
)
from rankalign.evaluation.config import EvaluateConfig
from rankalign.evaluation.entries import Entry
from rankalign.models import default_device
from rankalign.tokenization import resolve_chat_template


class Generator:
    """A model loaded through the sample stage (its decoders, stop strings and prompt encoding).

    The model is loaded on first use: a rerun whose generations are all cached loads nothing."""

    def __init__(self, entry: Entry, cfg: EvaluateConfig):
        self.cfg, self.entry, self._policy = cfg, entry, None

    @property
    def policy(self):
        if self._policy is None:
            from rankalign.sampling.backends import HFPolicy
            from rankalign.sampling.config import SampleConfig

            c = self.cfg
            sample_cfg = SampleConfig(
                prompts=str(c.prompts),
                out=str(Path(c.out) / "generations"),
                model=self.entry.path,
                sources=[{"kind": "policy", "strategy": "greedy", "num": 1}],
                max_new_tokens=c.max_new_tokens,
                stop=list(c.stop),
                seed=c.seed,
                batch_size=c.batch_size,
                max_prompt_length=c.max_prompt_length,
                chat_template=c.chat_template,
                dtype=c.dtype,
                device=c.device,
                trust_remote_code=c.trust_remote_code,
                allow_pickle=c.allow_pickle,
            )
            self._policy = HFPolicy(self.entry.path, sample_cfg, default_device(c.device))
        return self._policy

    def load(self) -> None:
        """Load the model now (it is otherwise loaded on first use)."""
        _ = self.policy

    @property
    def model(self):
        return self.policy.model

    @property
    def tokenizer(self):
        return self.policy.tokenizer

    def source(self, num: int):
        from rankalign.sampling.config import SourceConfig

        c = self.cfg
        if num == 1 and c.strategy == "greedy":
            return SourceConfig(kind="policy", strategy="greedy", num=1)
        return SourceConfig(
            kind="policy", strategy="sample", num=num, temperature=c.temperature, top_p=c.top_p
        )

    def generate(self, rows: list[dict], num: int):
        """Yield (row indices, their `num` responses) batch by batch; prompts of similar length
        share a batch; responses are cut at the first stop string."""
        from rankalign.sampling.decoding import derive_seed, truncate_at_stop

        src = self.source(num)
        ids = [self.policy.encode(row["prompt"])[0] for row in rows]
        order = sorted(range(len(rows)), key=lambda i: -len(ids[i]))
        for s in range(0, len(order), self.cfg.batch_size):
            idx = order[s : s + self.cfg.batch_size]
            seeds = [
                [derive_seed(self.cfg.seed, src.label(), rows[i]["id"], j) for j in range(num)]
                for i in idx
            ]
            texts = self.policy.generate(src, [ids[i] for i in idx], seeds)
            yield idx, [[truncate_at_stop(x, self.cfg.stop) for x in t] for t in texts]

    def settings_key(self, num: int) -> str:
        from rankalign.models import model_fingerprint

        c = self.cfg
        data = {
            "model": model_fingerprint(self.entry.path),
            "source": self.source(num).as_dict(),
            "max_new_tokens": c.max_new_tokens,
            "stop": c.stop,
            "seed": c.seed,
            "max_prompt_length": c.max_prompt_length,
            "chat_template": resolve_chat_template(c.chat_template, self.entry.path),
            "dtype": c.dtype,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def close(self):
        self._policy = None
        gc.collect()


def cached_generate(
    gen: Generator, rows: list[dict], num: int, path: Path, cfg: EvaluateConfig, desc: str
) -> list[list[str]]:
    """Generations for `rows`, reusing the rows of `path` made with the same settings.

    Missing rows are generated batch by batch; the file is rewritten atomically every few
    batches, so an interrupted run keeps what it finished and a rerun only generates the rest.
    """
    key = gen.settings_key(num)
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
        for b, (idx, responses) in enumerate(gen.generate(todo, num)):
            for i, resp in zip(idx, responses):
                done[todo[i]["id"]] = resp
            bar.update(len(idx))
            if b % 4 == 3:  # commit every few batches: an interrupted run keeps them
                save()
    save()
    return [done[row["id"]] for row in rows]
