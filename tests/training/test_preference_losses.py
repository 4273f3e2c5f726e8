"""The preference losses on known log-probabilities: their values where the formulas give them in
closed form, the direction they push, and the rewards they report."""

from __future__ import annotations

import math

import pytest
import torch

from plugins.preference_training import PreferenceTrainingConfig
from plugins.training.preference.losses import SequenceLogps, preference_loss


def pairs(chosen: list[float], rejected: list[float], counts: list[int]) -> SequenceLogps:
    return SequenceLogps(torch.tensor(chosen + rejected, requires_grad=True), torch.tensor(counts + counts))


def test_dpo_and_ipo_at_the_reference_give_log_2_and_the_squared_target():
    policy = pairs([-5.0, -8.0], [-6.0, -7.0], [4, 2])
    reference = SequenceLogps(policy.sums.detach().clone(), policy.counts)
    loss, metrics = preference_loss(PreferenceTrainingConfig(loss="dpo"), policy, reference)
    assert loss.item() == pytest.approx(math.log(2))
    assert metrics["rewards/margins"].item() == 0 and metrics["rewards/accuracies"].item() == 0
    loss, _ = preference_loss(PreferenceTrainingConfig(loss="ipo", beta=0.25), policy, reference)
    assert loss.item() == pytest.approx(4.0)  # (0 - 1 / (2 * 0.25)) ** 2


def test_dpo_raises_the_chosen_and_lowers_the_rejected_log_probability():
    policy = pairs([-5.0], [-6.0], [3])
    reference = SequenceLogps(torch.tensor([-5.0, -5.0]), policy.counts)
    loss, metrics = preference_loss(PreferenceTrainingConfig(loss="dpo", beta=0.5), policy, reference)
    loss.backward()
    assert policy.sums.grad[0] < 0 < policy.sums.grad[1]  # descending the loss raises chosen, lowers rejected
    assert metrics["rewards/chosen"].item() == 0 and metrics["rewards/rejected"].item() == pytest.approx(-0.5)
    assert metrics["rewards/accuracies"].item() == 1
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.5)), rel=1e-5)


def test_simpo_compares_per_token_log_probabilities_with_a_target_margin():
    policy = pairs([-4.0], [-9.0], [2])  # per token: -2 and -4.5
    config = PreferenceTrainingConfig(loss="simpo", beta=2.0, simpo_gamma=1.0)
    loss, metrics = preference_loss(config, policy, None)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-(2.0 * 2.5 - 1.0))), rel=1e-5)
    assert metrics["rewards/margins"].item() == pytest.approx(5.0)


def test_orpo_adds_the_chosen_answers_language_model_loss():
    policy = pairs([-4.0, -2.0], [-9.0, -9.0], [2, 2])
    loss, metrics = preference_loss(PreferenceTrainingConfig(loss="orpo", beta=0.1), policy, None)
    assert metrics["nll_loss"].item() == pytest.approx(1.5)  # 6 nats over 4 chosen tokens
    assert 1.5 < loss.item() < 1.5 + 0.1 * math.log(2)  # the odds-ratio term is below log 2 when chosen wins


def test_rpo_alpha_adds_the_chosen_answers_language_model_loss_to_dpo():
    policy = pairs([-4.0, -2.0], [-9.0, -9.0], [2, 2])
    reference = SequenceLogps(policy.sums.detach().clone(), policy.counts)
    plain, _ = preference_loss(PreferenceTrainingConfig(loss="dpo"), policy, reference)
    with_nll, metrics = preference_loss(PreferenceTrainingConfig(loss="dpo", rpo_alpha=0.5), policy, reference)
    assert metrics["nll_loss"].item() == pytest.approx(1.5)  # 6 nats over 4 chosen tokens
    assert with_nll.item() == pytest.approx(plain.item() + 0.5 * 1.5)
    with_nll.backward()
    assert (policy.sums.grad[:2] < 0).all()  # the chosen answers are pushed up harder than by DPO alone


def test_kto_weighs_desirable_and_undesirable_completions():
    policy = SequenceLogps(torch.tensor([-3.0, -3.0, -3.0]), torch.tensor([2, 2, 2]))
    reference = SequenceLogps(policy.sums.clone(), policy.counts)
    desirable = torch.tensor([True, True, False])
    config = PreferenceTrainingConfig(loss="kto", desirable_weight=1.0, undesirable_weight=2.0)
    loss, metrics = preference_loss(config, policy, reference, desirable)
    assert loss.item() == pytest.approx((0.5 + 0.5 + 2 * 0.5) / 3)  # 1 - sigmoid(0) = 0.5 each, weighted
    assert metrics["kl"].item() == 0 and metrics["rewards/margins"].item() == 0


def test_kto_logs_the_same_metric_names_whatever_the_batch_holds():
    # Ranks reduce the metrics together, so a batch without undesirable completions still names them (NaN).
    policy = SequenceLogps(torch.tensor([-2.0, -3.0]), torch.tensor([2, 2]))
    reference = SequenceLogps(torch.tensor([-3.0, -3.0]), policy.counts)
    config = PreferenceTrainingConfig(loss="kto")
    _, only_desirable = preference_loss(config, policy, reference, torch.tensor([True, True]))
    _, mixed = preference_loss(config, policy, reference, torch.tensor([True, False]))
    assert only_desirable.keys() == mixed.keys()
    assert math.isnan(only_desirable["rewards/rejected"].item()) and math.isnan(
        only_desirable["rewards/margins"].item()
    )
    assert only_desirable["rewards/chosen"].item() == pytest.approx(0.05)
