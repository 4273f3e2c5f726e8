"""The preference losses on sequence log-probabilities (summed over each sequence's answer tokens).

Paired (chosen and rejected answers to one prompt): DPO (Rafailov et al. 2023, with the label
smoothing of conservative DPO), IPO (Azar et al. 2023), SimPO (Meng et al. 2024) and ORPO (Hong et
al. 2024); unpaired (one completion, desirable or not): KTO (Ethayarajh et al. 2024). The formulas
are TRL's (DPOTrainer's sigmoid and ipo, CPOTrainer's simpo, ORPOTrainer, KTOTrainer), written on
our tensors. Each loss also gives the rewards it implies, for the metrics logged every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import torch

LossName = Literal["dpo", "ipo", "orpo", "kto", "simpo"]
LOSSES: tuple[str, ...] = ("dpo", "ipo", "orpo", "kto", "simpo")
# The data each loss trains on (the ``task`` of dataset.tokenized) and whether it compares with a reference model.
TASK_OF_LOSS = {
    "dpo": "preference",
    "ipo": "preference",
    "orpo": "preference",
    "simpo": "preference",
    "kto": "unpaired",
}
REFERENCE_FREE = ("orpo", "simpo")


class LossSettings(Protocol):
    loss: str
    beta: float
    label_smoothing: float
    simpo_gamma: float
    desirable_weight: float
    undesirable_weight: float
    rpo_alpha: float | None


@dataclass(frozen=True)
class SequenceLogps:
    """Per sequence: its log-probability summed over its answer tokens, and how many there are."""

    sums: torch.Tensor
    counts: torch.Tensor

    @property
    def means(self) -> torch.Tensor:
        """Per answer token: the length-normalised log-probability of IPO, SimPO and ORPO."""
        return self.sums / self.counts.clamp(min=1)

    def halves(self) -> tuple[SequenceLogps, SequenceLogps]:
        """(chosen, rejected) of a paired batch, whose rows are the chosen then the rejected sequences."""
        half = self.sums.shape[0] // 2
        return (
            SequenceLogps(self.sums[:half], self.counts[:half]),
            SequenceLogps(self.sums[half:], self.counts[half:]),
        )


def needs_reference(loss: str) -> bool:
    return loss not in REFERENCE_FREE


def preference_loss(
    settings: LossSettings,
    policy: SequenceLogps,
    reference: SequenceLogps | None,
    desirable: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The batch's loss and its metrics (detached): ``rewards/chosen``, ``rewards/rejected``,
    ``rewards/margins``, ``rewards/accuracies`` and the loss's own (KTO's ``kl``, ORPO's ``nll_loss``)."""
    if settings.loss == "kto":
        return _kto(settings, policy, reference, desirable)
    return _paired(settings, policy, reference)


def _paired(settings: LossSettings, policy: SequenceLogps, reference: SequenceLogps | None):
    from torch.nn.functional import logsigmoid

    beta, smoothing = settings.beta, settings.label_smoothing
    chosen, rejected = policy.halves()
    extra: dict[str, torch.Tensor] = {}
    if settings.loss == "dpo":
        reference_chosen, reference_rejected = reference.halves()
        chosen_rewards = beta * (chosen.sums - reference_chosen.sums)
        rejected_rewards = beta * (rejected.sums - reference_rejected.sums)
        margin = chosen_rewards - rejected_rewards
        losses = -(1 - smoothing) * logsigmoid(margin) - smoothing * logsigmoid(-margin)
    elif settings.loss == "ipo":
        # IPO regresses the length-normalised log-ratio margin onto 1 / (2 beta).
        reference_chosen, reference_rejected = reference.halves()
        chosen_ratios = chosen.means - reference_chosen.means
        rejected_ratios = rejected.means - reference_rejected.means
        losses = (chosen_ratios - rejected_ratios - 1 / (2 * beta)) ** 2
        chosen_rewards, rejected_rewards = beta * chosen_ratios, beta * rejected_ratios
    elif settings.loss == "simpo":
        chosen_rewards, rejected_rewards = beta * chosen.means, beta * rejected.means
        margin = chosen_rewards - rejected_rewards - settings.simpo_gamma
        losses = -(1 - smoothing) * logsigmoid(margin) - smoothing * logsigmoid(-margin)
    else:  # orpo: the chosen answers' language-model loss plus beta times the odds-ratio loss
        log_odds = (chosen.means - rejected.means) - (_log1m_exp(chosen.means) - _log1m_exp(rejected.means))
        nll = -chosen.sums.sum() / chosen.counts.sum().clamp(min=1)
        losses = nll - beta * logsigmoid(log_odds)
        chosen_rewards, rejected_rewards = beta * chosen.means, beta * rejected.means
        extra = {"nll_loss": nll.detach(), "log_odds_ratio": log_odds.detach().mean()}
    loss = losses.mean()
    if settings.rpo_alpha is not None and settings.loss != "orpo":
        # RPO (Pang et al. 2024): the chosen answers' language-model loss beside the preference
        # loss, so that pushing the rejected answers down cannot drag the chosen ones with them.
        nll = -chosen.sums.sum() / chosen.counts.sum().clamp(min=1)
        loss = loss + settings.rpo_alpha * nll
        extra = {"nll_loss": nll.detach()}
    metrics = {
        "rewards/chosen": chosen_rewards.detach().mean(),
        "rewards/rejected": rejected_rewards.detach().mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).detach().mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        **extra,
    }
    return loss, metrics


def _kto(settings: LossSettings, policy: SequenceLogps, reference: SequenceLogps, desirable: torch.Tensor):
    import torch

    ratios = policy.sums - reference.sums
    # KTO's reference point, the policy's KL from the reference, estimated from this batch's
    # completions (TRL pairs each completion with another example's prompt for it; that costs a
    # third forward pass). Detached and clamped at zero, as in the paper.
    kl = ratios.detach().mean().clamp(min=0)
    beta = settings.beta
    losses = torch.where(
        desirable,
        settings.desirable_weight * (1 - torch.sigmoid(beta * (ratios - kl))),
        settings.undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratios))),
    )
    rewards = beta * ratios.detach()
    nan = torch.full((), float("nan"), device=rewards.device)
    # Always the same names (ranks reduce them together); NaN where this batch has no such completion.
    chosen = rewards[desirable].mean() if desirable.any() else nan
    rejected = rewards[~desirable].mean() if (~desirable).any() else nan
    metrics = {
        "kl": kl,
        "rewards/accuracies": ((rewards > 0) == desirable).float().mean(),
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
    }
    return losses.mean(), metrics


def _log1m_exp(logps: torch.Tensor) -> torch.Tensor:
    """log(1 - p) from log p; a log-probability of exactly 0 would give -inf, so it is kept below."""
    import torch

    return torch.log1p(-torch.exp(logps.clamp(max=-1e-6)))
