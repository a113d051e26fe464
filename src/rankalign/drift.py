"""How far a trained policy has drifted from its start model: KL(pi || pi_ref) on held-out
prompts, estimated from the policy's own samples (the DPO paper's Figure 2 puts reward against
this KL).

    KL(pi || pi_ref)(x) = E_{y ~ pi(.|x)} [log pi(y|x) - log pi_ref(y|x)]

For samples y_1..y_n drawn from pi on prompt x, the mean of the per-sample log ratios
(sequence sums of token log-probs) is an unbiased estimate of that expectation. Each sample's
term can be negative; their mean over many samples cannot stay so. The estimate is the mean over
prompts of the per-prompt means (the prompt is the unit), with a bootstrap interval over prompts.

Log-probs come from the one rows -> log-probs path (`logprobs.rows_logps`): each sample is encoded
as training encodes a response (`encode_rows`, ending in EOS), so the terms are those the loop's
KL penalty uses. Two caveats the caller owns: the samples must come from pi itself at
temperature 1 without top-p / top-k (else it is the KL of another distribution), and a sample
cut at max_new_tokens did not draw the EOS that the encoding appends (one extra token's log
ratio, the same treatment for every method).
"""

from __future__ import annotations

import numpy as np

from rankalign.logprobs import rows_logps
from rankalign.metrics import bootstrap_ci


def kl_estimate(
    policy_logps: list[list[float]],
    reference_logps: list[list[float]],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """The KL estimate from per-prompt lists of the samples' sequence log-probs under the policy
    and under the reference (the same samples in the same order). Per sample
    log pi - log pi_ref, their mean per prompt (`per_prompt`), then `kl`: the mean over prompts,
    with the percentile bootstrap interval of that mean (prompts resampled,
    `metrics.bootstrap_ci`). Prompts without samples are left out (`prompts_without_samples`).
    No sample at all: kl and its interval None with a note."""
    if len(policy_logps) != len(reference_logps):
        raise ValueError("policy and reference log-probs must cover the same prompts")
    per_prompt, empty = [], 0
    for lp, lr in zip(policy_logps, reference_logps):
        if len(lp) != len(lr):
            raise ValueError("policy and reference log-probs must cover the same samples")
        if not lp:
            empty += 1
            continue
        per_prompt.append(float(np.mean(np.asarray(lp, float) - np.asarray(lr, float))))
    out = {
        "prompts": len(per_prompt),
        "samples": sum(len(lp) for lp in policy_logps),
        "prompts_without_samples": empty,
    }
    keys = ("kl", "ci_low", "ci_high")
    if not per_prompt:
        why = "no sample: the KL estimate is undefined"
        return {**out, **dict.fromkeys(keys), "per_prompt": [], "notes": dict.fromkeys(keys, why)}
    low, high = bootstrap_ci(per_prompt, resamples=resamples, confidence=confidence, seed=seed)
    out.update(kl=float(np.mean(per_prompt)), ci_low=low, ci_high=high, per_prompt=per_prompt)
    if len(per_prompt) == 1:
        out["notes"] = dict.fromkeys(("ci_low", "ci_high"), "one prompt: no interval")
        out.update(ci_low=None, ci_high=None)
    return out


def estimate_kl(
    policy,
    reference,
    tokenizer,
    prompts: list,
    samples: list[list[str]],
    *,
    max_length: int,
    chat_template: str,
    min_response_tokens: int = 64,
    batch_size: int = 8,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """KL(policy || reference) from `samples` (per prompt, drawn from `policy`): both models'
    sequence log-probs through `rows_logps` (the same token ids for both; one tokenizer), then
    `kl_estimate`. The models run one after the other; the caller may free the first in between
    by calling `rows_logps` and `kl_estimate` itself."""
    encoding = {
        "max_length": max_length,
        "min_response_tokens": min_response_tokens,
        "chat_template": chat_template,
    }
    logps = [
        rows_logps(
            model, tokenizer, prompts, samples, batch_size=batch_size, desc=desc, **encoding
        )[0]
        for model, desc in ((policy, "kl: policy"), (reference, "kl: reference"))
    ]
    return kl_estimate(*logps, resamples=resamples, confidence=confidence, seed=seed)
