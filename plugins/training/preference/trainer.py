"""The Trainer of preference training: one forward of a batch's chosen and rejected sequences
together, their log-probabilities over the answer tokens, the reference's, then the loss.

The reference: with an adapter, the same model with the adapter disabled (no second copy in
memory); for full training, a frozen copy at the compute precision; or log-probabilities computed
once before training (``precompute_reference``), which need neither.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext

import numpy as np
import torch

from plugins.training.chunked_loss import chunked_row_losses, split_for_chunked_loss
from plugins.training.preference.batches import REFERENCE_LOGPS, PreferenceRows
from plugins.training.preference.losses import LossSettings, SequenceLogps, needs_reference, preference_loss
from plugins.training.trainer import CheckpointingTrainer
from plugins.training.validation_loss import row_losses


class PreferenceTrainer(CheckpointingTrainer):
    def __init__(self, *args, loss_settings: LossSettings, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_settings = loss_settings
        # The loss is a mean over the batch's examples: the Trainer must divide it by the accumulation.
        self.model_accepts_loss_kwargs = False
        self.split_model = split_for_chunked_loss(self.model)
        self.ref_model = ref_model
        self.ref_split = None
        if ref_model is not None:
            self.ref_model = ref_model.to(self.args.device).eval().requires_grad_(False)
            self.ref_split = split_for_chunked_loss(self.ref_model)
        # Kept as tensors until logged: reading each value at every step would wait for the GPU.
        self._metrics: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        policy = self._sequence_logps(model, inputs, self._split_of(model))
        reference = self._reference_logps(model, inputs, policy.counts)
        loss, metrics = preference_loss(self.loss_settings, policy, reference, inputs.get("desirable"))
        stored = self._metrics["train" if model.training else "eval"]
        for name, value in metrics.items():
            stored[name].append(value)
        return (loss, {}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the means of the loss's metrics since the last log (``eval_`` ones to an evaluation's)."""
        mode = "eval" if "eval_loss" in logs else "train" if "loss" in logs else None
        if mode is not None:
            prefix = "eval_" if mode == "eval" else ""
            # Every rank logs the same names in the same order (the reduction is collective); a
            # value a batch could not measure (KTO's chosen rewards of a batch with no desirable
            # completion) is NaN and left out of the mean over every rank's batches.
            for name in sorted(self._metrics[mode]):
                values = torch.stack(self._metrics[mode][name]).float()
                measured = ~values.isnan()
                totals = torch.stack([values[measured].sum(), measured.sum().float()])
                total, count = self.accelerator.reduce(totals, reduction="sum").tolist()
                if count:
                    logs[prefix + name] = total / count
            self._metrics[mode].clear()
        super().log(logs, start_time)

    def precompute_reference(self, rows: PreferenceRows) -> None:
        """Give ``rows`` the reference log-probabilities of every example, from the model as it is
        now, adapter included (before training, it is the reference: a fresh adapter changes nothing,
        a continued one is part of the starting model): one pass without gradients."""
        loader = torch.utils.data.DataLoader(
            rows, batch_size=self.args.per_device_eval_batch_size, collate_fn=self.data_collator
        )
        was_training = self.model.training
        self.model.eval()
        computed = []
        with torch.no_grad():
            for batch in loader:
                batch = self._prepare_inputs(batch)
                sums = self._sequence_logps(self.model, batch, self.split_model).sums.float().cpu().numpy()
                computed.append(sums.reshape(_parts(batch), -1).T)  # rows are part after part
        self.model.train(was_training)
        rows.reference = np.concatenate(computed) if computed else np.zeros((0, 1), np.float32)

    def _sequence_logps(self, model, inputs, split) -> SequenceLogps:
        """Each row's log-probability summed over its answer tokens (labels != -100)."""
        labels = inputs["labels"]
        # Mixed precision autocasts the wrapped model's forward; the decoder called directly needs it here.
        with self.accelerator.autocast():
            if split is not None:
                hidden = split.decoder(input_ids=inputs["input_ids"]).last_hidden_state
                sums, counts = chunked_row_losses(hidden, split.head, labels, split.tokens_per_chunk)
            else:
                sums, counts = row_losses(model(input_ids=inputs["input_ids"]).logits, labels)
        return SequenceLogps(-sums, counts)

    def _split_of(self, model):
        """The chunked-loss split of our model; a wrapped one (DDP, compiled) runs its own forward."""
        return self.split_model if model is self.model else None

    def _reference_logps(self, model, inputs, counts) -> SequenceLogps | None:
        if not needs_reference(self.loss_settings.loss):
            return None
        if REFERENCE_LOGPS in inputs:
            return SequenceLogps(inputs[REFERENCE_LOGPS], counts)
        with torch.no_grad():
            if self.ref_model is not None:
                return self._sequence_logps(self.ref_model, inputs, self.ref_split)
            unwrapped = self.accelerator.unwrap_model(model)
            # A model without adapters (full training) is its own reference only before training:
            # precompute_reference; during training the plugin gives a frozen copy or precomputed values.
            adapter_off = unwrapped.disable_adapter() if hasattr(unwrapped, "disable_adapter") else nullcontext()
            with adapter_off:
                return self._sequence_logps(model, inputs, self._split_of(model))


def _parts(batch: dict[str, torch.Tensor]) -> int:
    """How many sequences each example has in ``batch`` (2 for a pair, 1 for a completion)."""
    return 1 if "desirable" in batch else 2
