"""The training loss of `dsc train`: token-weighted causal-LM cross-entropy.

    loss = sum_t w_t * CE_t / sum_t w_t

over every predicted token t of one optimizer step — all micro-batches of a gradient-accumulation
step and, with `average_tokens_across_devices` (the Trainer's default), all processes — where
CE_t is the cross-entropy of predicting token t+1 and w_t its weight: the artifact's loss weight
(`weights` / `loss_weights`) where the label is not -100, 0 where it is. An artifact without loss
weights has w_t = 1 on every supervised token, which is transformers' own normalisation (sum of
token losses over the number of supervised tokens of the step). Evaluation batches are normalised
by their own weight.

So a weight of 0 is exactly masking (the token adds 0 to both sums: the same loss and the same
gradients as label -100), and all weights 1 is exactly the unweighted loss (the very same
computation). Both are tested in tests/chat/test_loss_weights.py.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from dsc.runtime.features import IGNORE, WEIGHTS


def shifted_weights(labels: Any, weights: Any | None) -> Any:
    """The weight of each prediction (position t predicts label t+1): the label's loss weight, 0
    where the label is -100 (and 1 on supervised labels when the rows carry no weights)."""
    supervised = (labels[..., 1:] != IGNORE).float()
    return supervised if weights is None else weights[..., 1:].float() * supervised


def weighted_lm_loss(logits: Any, labels: Any, weights: Any | None, total_weight: Any | None = None) -> Any:
    """sum(w * CE) / total_weight (default: this batch's sum of w); 0 when nothing is weighted."""
    import torch.nn.functional as F

    target = labels[..., 1:]
    w = shifted_weights(labels, weights)
    logits = logits[..., :-1, :].float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1).to(logits.device),
                         ignore_index=IGNORE, reduction="none")
    numerator = (ce * w.reshape(-1).to(ce.device)).sum()
    denominator = total_weight if total_weight is not None else w.sum()
    # (a step with no weight at all gives 0, not 0/0; the clamp changes no positive total that matters)
    return numerator / denominator.to(numerator.device, numerator.dtype).clamp(min=1e-12)


@lru_cache(maxsize=1)
def weighted_trainer_class() -> type:
    """transformers' Trainer computing the loss above (imported lazily: transformers is heavy)."""
    import torch
    from transformers import Trainer

    class WeightedLossTrainer(Trainer):
        # the loss is normalised by the weight of the whole accumulated step (see the module doc)
        loss_is_scaled_for_ga = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            weights = inputs.pop(WEIGHTS, None)
            outputs = model(**inputs)
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
            loss = weighted_lm_loss(logits, labels, weights, num_items_in_batch)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                # the step's weight was summed over all processes; the gradients are averaged
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

        def _get_num_items_in_batch(self, batch_samples, device):
            """The step's total weight (the denominator of its loss), over all processes."""
            total = sum(shifted_weights(b["labels"], b.get(WEIGHTS)).sum() for b in batch_samples)
            total = torch.as_tensor(total, dtype=torch.float32)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                total = self.accelerator.gather(total.to(device)).sum()
            return total.to(device)

    return WeightedLossTrainer
