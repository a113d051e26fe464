"""The listwise frontier and the released conventions: LiPO-lambda, InfoNCA and NCA against
hand-worked values and their stated special cases; PRO as released (summed SFT weighted by
(n-1)^2, reward-gap temperatures) against a port of the released `compute_loss`; IPO with
per-token log-ratios against TRL's formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rankalign.losses import LossInputs, dpo, infonca, ipo, lipo, nca, pro


def inputs(logp, ref, scores, lengths=None) -> LossInputs:
    logp = torch.tensor(logp, dtype=torch.float64)
    return LossInputs(
        logp=logp,
        lengths=torch.tensor(
            lengths if lengths is not None else [[1] * logp.shape[1]] * logp.shape[0]
        ),
        scores=torch.tensor(scores, dtype=torch.float64),
        mask=torch.ones_like(logp, dtype=torch.bool),
        ref_logp=torch.tensor(ref, dtype=torch.float64),
    )


def test_lipo_by_hand():
    # one list, k = 3, beta = 1: s = logp - ref = (0.5, -1.0, 2.0); scores 3, 1, 2
    x = inputs([[0.5, -1.0, 2.0]], [[0.0, 0.0, 0.0]], [[3.0, 1.0, 2.0]])
    # labels normalized: psi = (1, 0, 0.5); gains G = 2^psi - 1 = (1, 0, sqrt(2) - 1)
    g = [1.0, 0.0, math.sqrt(2) - 1]
    # ranks by s descending: y3 (2.0) first, y1 (0.5) second, y2 (-1.0) third
    inv_d = [1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(2)]  # tau = (2, 3, 1)
    s = [0.5, -1.0, 2.0]

    def term(i, j):  # y_i preferred to y_j
        weight = abs(g[i] - g[j]) * abs(inv_d[i] - inv_d[j])
        return -weight * math.log(1 / (1 + math.exp(-(s[i] - s[j]))))

    expected = term(0, 1) + term(0, 2) + term(2, 1)  # pairs 3>1, 3>2, 2>1 by score
    loss, parts = lipo(x, beta=1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert parts["rank"].item() == pytest.approx(expected, rel=1e-12)


def test_lipo_weights_carry_no_gradient():
    """d loss / d s_i = sum over pairs of Delta * d(-log sigmoid(s_i - s_j)): the Lambda weights
    (gains, ranks) are constants."""
    x = inputs([[0.5, -1.0, 2.0, 0.1]], [[0.0] * 4], [[3.0, 1.0, 2.0, 0.0]])
    x.logp.requires_grad_(True)
    loss, _ = lipo(x, beta=1.0)
    (grad,) = torch.autograd.grad(loss, x.logp)
    s = x.logp.detach()[0]
    psi = torch.tensor([1.0, 1 / 3, 2 / 3, 0.0], dtype=torch.float64)
    gain = 2**psi - 1
    tau = torch.tensor([2.0, 4.0, 1.0, 3.0], dtype=torch.float64)
    inv_d = 1 / torch.log2(1 + tau)
    expected = torch.zeros(4, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            if psi[i] > psi[j]:
                w = (gain[i] - gain[j]).abs() * (inv_d[i] - inv_d[j]).abs()
                d = torch.sigmoid(-(s[i] - s[j]))  # d/dx of -log sigmoid(x) = -sigmoid(-x)
                expected[i] -= w * d
                expected[j] += w * d
    assert torch.allclose(grad[0], expected, atol=1e-12)


def test_lipo_k2_is_dpo_times_the_constant_lambda_weight():
    x = inputs([[-3.0, -5.0], [-2.0, -1.0]], [[-3.5, -4.0], [-2.5, -1.5]], [[1.0, 0.0], [0.3, 0.9]])
    weight = 1 - 1 / math.log2(3)  # |G_w - G_l| = 1, |1/D(1) - 1/D(2)|
    for beta in (0.1, 0.7):
        assert lipo(x, beta=beta)[0].item() == pytest.approx(
            weight * dpo(x, beta=beta)[0].item(), rel=1e-12
        )


def test_lipo_raw_labels_use_the_scores_as_gains():
    x = inputs([[0.5, -1.0]], [[0.0, 0.0]], [[3.0, 1.0]])
    delta = (2**3 - 2**1) * (1 - 1 / math.log2(3))
    expected = -delta * math.log(1 / (1 + math.exp(-1.5)))
    assert lipo(x, beta=1.0, lipo_labels="raw")[0].item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="labels"):
        lipo(x, lipo_labels="ranks")


def test_infonca_and_nca_by_hand():
    # k = 3, beta = 1: r = (1, -0.5, 0); scores (2, 0, 1), alpha = 1: w = softmax(2, 0, 1)
    x = inputs([[1.0, -0.5, 0.0]], [[0.0, 0.0, 0.0]], [[2.0, 0.0, 1.0]])
    e = [math.exp(2), math.exp(0), math.exp(1)]
    w = [v / sum(e) for v in e]
    r = [1.0, -0.5, 0.0]
    log_z = math.log(sum(math.exp(v) for v in r))
    expected_info = -sum(wi * (ri - log_z) for wi, ri in zip(w, r))
    assert infonca(x, beta=1.0, nca_alpha=1.0)[0].item() == pytest.approx(expected_info, rel=1e-12)

    def logsig(v):
        return -math.log1p(math.exp(-v))

    expected_nca = -sum(wi * logsig(ri) + logsig(-ri) / 3 for wi, ri in zip(w, r))
    assert nca(x, beta=1.0, nca_alpha=1.0)[0].item() == pytest.approx(expected_nca, rel=1e-12)


def test_infonca_k2_with_a_one_hot_target_is_dpo():
    x = inputs([[-3.0, -5.0], [-2.0, -1.0]], [[-3.5, -4.0], [-2.5, -1.5]], [[1.0, 0.0], [0.3, 0.9]])
    for beta in (0.1, 0.7):
        got = infonca(x, beta=beta, nca_alpha=1e-6)[0].item()  # alpha -> 0: w one-hot on the best
        assert got == pytest.approx(dpo(x, beta=beta)[0].item(), rel=1e-12)


def test_nca_k2_one_hot_is_trls_nca_pair():
    """TRL 1.16 `DPOTrainer` loss_type "nca_pair": -logsig(c) - 0.5 logsig(-c) - 0.5 logsig(-r)
    with c, r = beta * (chosen, rejected) log-ratios."""
    logp, ref = [[-3.0, -5.0], [-2.0, -1.0]], [[-3.5, -4.0], [-2.5, -1.5]]
    x = inputs(logp, ref, [[1.0, 0.0], [0.9, 0.3]])
    beta = 0.3
    ratios = torch.tensor(logp, dtype=torch.float64) - torch.tensor(ref, dtype=torch.float64)
    c, r = beta * ratios[:, 0], beta * ratios[:, 1]
    trl = (-F.logsigmoid(c) - 0.5 * F.logsigmoid(-c) - 0.5 * F.logsigmoid(-r)).mean()
    assert nca(x, beta=beta, nca_alpha=1e-6)[0].item() == pytest.approx(trl.item(), rel=1e-12)


def test_nca_targets_follow_alpha():
    x = inputs([[1.0, -0.5, 0.0]], [[0.0] * 3], [[2.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="alpha"):
        nca(x, nca_alpha=0.0)
    assert infonca(x, nca_alpha=100.0)[0].item() != pytest.approx(
        infonca(x, nca_alpha=0.01)[0].item()
    )


# ---------------------------------------------------------------------------------------------
# PRO as released (AlibabaResearch/DAMO-ConvAI, PRO/train/utils/process_manager.py compute_loss)


def released_pro_loss(sum_scores, suffix_len, rewards, sft_weight):
    """A port of the released `compute_loss` (responses sorted best first, index 0 the SFT
    target, rewards raw; eps 1e-10 as released)."""
    batch, n = sum_scores.shape
    scores = sum_scores / suffix_len
    total = 0.0
    for time in range(n - 1):
        neg_reward = rewards[:, time + 1 :]
        pos_reward = rewards[:, time]
        neg_temperatures = pos_reward.view(-1, 1) - neg_reward
        pos_temperature = torch.max(neg_temperatures, dim=1).values
        loss = (
            torch.log(
                1e-10
                + torch.exp(scores[:, time] * pos_temperature)
                + torch.sum(torch.exp(scores[:, time + 1 :] * neg_temperatures), dim=1)
            )
            - scores[:, time] * pos_temperature
        )
        total = total + torch.mean(loss)
    sft_loss = torch.mean(-sum_scores[:, 0])
    return total + sft_weight * math.pow(n - 1, 2) * sft_loss


@pytest.mark.parametrize("n", [2, 3, 5])
def test_pro_reproduces_the_released_loss(n):
    g = torch.Generator().manual_seed(n)
    batch = 4
    sum_scores = -torch.rand(batch, n, generator=g, dtype=torch.float64) * 20 - 1
    lengths = torch.randint(1, 12, (batch, n), generator=g)
    rewards = torch.sort(torch.randn(batch, n, generator=g, dtype=torch.float64), 1, True).values
    released = released_pro_loss(sum_scores, lengths.double(), rewards, sft_weight=0.05)
    x = LossInputs(sum_scores, lengths, rewards, torch.ones(batch, n, dtype=torch.bool))
    ours, _ = pro(
        x,
        pro_temperature="reward-gap",
        sft_reduction="sum",
        pro_sft_scale="n-1-squared",
        sft_weight=0.05,
    )
    assert ours.item() == pytest.approx(released.item(), rel=1e-9)


def test_pro_data_layout_renders_as_the_released_collator(tmp_path):
    """PRO's HH files tag turns; its collator writes "\\n\\nHuman: ...\\n\\nAssistant:" and joins
    the response with one space (`HH_DataManager.train_data_collator`)."""
    import json

    from rankalign.data import load_lists

    turns = ["<|prompter|>How do I boil an egg?", "<|assistant|>In water.", "<|prompter|>How long?"]
    rec = {
        "prefix": [turns + ["<|assistant|>"]] * 2,
        "suffix": ["Ten minutes.", "Forever."],
        "reward": [1.0, -1.0],
    }
    path = tmp_path / "pro.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    (row,) = load_lists(str(path)).rows
    collator = (
        "".join(turns + ["<|assistant|>"])
        .replace("<|prompter|>", "\n\nHuman: ")
        .replace("<|assistant|>", "\n\nAssistant: ")
        .rstrip()
    )
    assert row["prompt"] == collator
    assert row["prompt"] + row["responses"][0] == collator + " " + "Ten minutes."
    assert row["responses"] == [" Ten minutes.", " Forever."]


# ---------------------------------------------------------------------------------------------
# IPO with per-token log-ratios: TRL 1.16 `DPOTrainer` loss_type "ipo"


def test_ipo_token_log_ratio_matches_trl():
    g = torch.Generator().manual_seed(0)
    chosen, rejected = (
        -torch.rand(6, generator=g, dtype=torch.float64) * 30,
        -torch.rand(6, generator=g, dtype=torch.float64) * 30,
    )
    ref_c, ref_r = chosen + torch.randn(6, generator=g, dtype=torch.float64), rejected - 1
    len_c, len_r = torch.randint(1, 40, (6,), generator=g), torch.randint(1, 40, (6,), generator=g)
    beta = 0.2
    # TRL: chosen_scores = chosen_logratios; averaged by completion tokens; (delta - 1/(2 beta))^2
    delta = (chosen - ref_c) / len_c - (rejected - ref_r) / len_r
    trl = ((delta - 1 / (2 * beta)) ** 2).mean()
    x = LossInputs(
        logp=torch.stack([chosen, rejected], 1),
        lengths=torch.stack([len_c, len_r], 1),
        scores=torch.tensor([[1.0, 0.0]] * 6, dtype=torch.float64),
        mask=torch.ones(6, 2, dtype=torch.bool),
        ref_logp=torch.stack([ref_c, ref_r], 1),
    )
    assert ipo(x, beta=beta, ipo_log_ratio="token")[0].item() == pytest.approx(
        trl.item(), rel=1e-12
    )
    sequence = (((chosen - ref_c) - (rejected - ref_r) - 1 / (2 * beta)) ** 2).mean()
    assert ipo(x, beta=beta)[0].item() == pytest.approx(sequence.item(), rel=1e-12)
