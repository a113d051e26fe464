"""Scoring inside an evaluation: the score stage's rewards as one weighted sum (`RewardSet`),
perplexity of generated text and the policy's length-normalized log-prob p_i (RRHF §3.2), both
through `logprobs.rows_logps`.
"""

from __future__ import annotations

import math
from collections import Counter

from rankalign.evaluation.config import EvaluateConfig
from rankalign.logprobs import rows_logps
from rankalign.models import default_device, load_tokenizer
from rankalign.scoring.rewards.base import weighted_sum
from rankalign.tokenization import resolve_chat_template


class RewardSet:
    """The score stage's rewards for parsed specs (`rewards.RewardSpec`, checked by `prepare`);
    the value is their weighted sum (`rewards.base.weighted_sum`, the score stage's own).

    `pairwise`: some reward looks at a row's responses together, so a win rate puts both answers
    in one row; `two_orders`: one of those is position-biased and is asked in both orders (both
    read from the rewards' schemas)."""

    def __init__(self, specs: list, defaults: dict):
        from rankalign.scoring.rewards.registry import build_rewards

        self.specs = list(specs)
        self.rewards = build_rewards(self.specs, defaults)
        self.label = " + ".join(s.text if isinstance(s.text, str) else str(s) for s in self.specs)
        self.pairwise = any(r.schema.pairwise for r in self.rewards)
        self.two_orders = any(r.schema.both_orders for r in self.rewards)
        # why values were left out (weighted_sum's reasons) -> how many, over this set's life
        self.unscored: Counter[str] = Counter()

    def score(self, rows: list[dict]) -> list[list[float | None]]:
        """Per row, one value per response: None where a reward could not score it, or a value
        (or the sum) is not a finite number (NaN or infinity have no mean and no ranking); the
        reasons are counted in `unscored`."""
        parts = [r.score(rows) for r in self.rewards]
        out = []
        for i, row in enumerate(rows):
            values = []
            for j in range(len(row["responses"])):
                total = weighted_sum(self.rewards, [p[i][j] for p in parts])
                if total.total is None:
                    self.unscored[total.reason] += 1
                values.append(total.total)
            out.append(values)
        return out

    def score_responses(
        self, prompts: list[dict], responses: list[str], desc: str, chunk: int = 64
    ) -> list[float | None]:
        """One value per (prompt row, response), in chunks under a progress bar."""
        from tqdm.auto import tqdm

        values: list[float | None] = []
        for s in tqdm(range(0, len(responses), chunk), desc=desc, unit="chunk", leave=False):
            rows = [
                {"id": p["id"], "prompt": p["prompt"], "responses": [r]}
                for p, r in zip(prompts[s : s + chunk], responses[s : s + chunk])
            ]
            values += [v[0] for v in self.score(rows)]
        return values


def perplexity(
    model,
    tokenizer,
    prompts: list,
    responses: list[str],
    cfg: EvaluateConfig,
    desc: str = "perplexity",
) -> dict:
    """exp(-sum log p(response tokens | prompt) / number of response tokens), over all responses.

    Response tokens are the response text's own tokens (no EOS: a generation cut at a stop string
    or at max_new_tokens did not end there). Empty responses have no tokens and are skipped.
    """
    keep = [i for i, r in enumerate(responses) if tokenizer(r, add_special_tokens=False).input_ids]
    if not keep:
        why = "every response is empty: no token to score, perplexity undefined"
        return {
            "perplexity": None,
            "ppl_tokens": 0,
            "ppl_skipped_empty": len(responses),
            "notes": {"perplexity": why},
        }
    logps, lengths, truncated = rows_logps(
        model,
        tokenizer,
        [prompts[i] for i in keep],
        [[responses[i]] for i in keep],
        batch_size=cfg.batch_size,
        desc=desc,
        eos=False,
        **_encoding(cfg, model),
    )
    total = sum(lp[0] for lp in logps)
    tokens = sum(n[0] for n in lengths)
    return {
        "perplexity": math.exp(-total / tokens),
        "ppl_tokens": tokens,
        "ppl_skipped_empty": len(responses) - len(keep),
        "ppl_truncated": truncated,
    }


def policy_scores(
    model, tokenizer, rows: list[dict], cfg: EvaluateConfig, desc: str
) -> list[list[float]]:
    """p_i = logp(y_i | x) / |y_i| (tokens incl. EOS, as RRHF ranks), per row and response."""
    logps, lengths, _ = rows_logps(
        model,
        tokenizer,
        [r["prompt"] for r in rows],
        [r["responses"] for r in rows],
        batch_size=cfg.batch_size,
        desc=desc,
        **_encoding(cfg, model),
    )
    return [[lp / max(n, 1) for lp, n in zip(*row)] for row in zip(logps, lengths)]


def _encoding(cfg: EvaluateConfig, model) -> dict:
    """How evaluation fits a prompt and a response into max_length (responses keep up to half);
    prompts are encoded as `model` was trained unless --chat_template says otherwise."""
    return {
        "max_length": cfg.max_length,
        "min_response_tokens": min(512, cfg.max_length // 2),
        "chat_template": resolve_chat_template(
            cfg.chat_template, getattr(model, "name_or_path", None)
        ),
    }


def load_lm(path: str, cfg: EvaluateConfig):
    from rankalign.models import load_causal_lm

    tok = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
    model = load_causal_lm(
        path,
        dtype=cfg.dtype,
        trust_remote_code=cfg.trust_remote_code,
        allow_pickle=cfg.allow_pickle,
        device=default_device(cfg.device),
    )
    return model.eval(), tok
