"""Output layer + cross-entropy in one autograd function, chunk by chunk.

The gradients are computed in the forward pass, one chunk of tokens at a time: softmax minus the
one-hot target is the gradient of the summed cross-entropy with respect to the logits, and two
matrix multiplies turn it into the gradients of the hidden states and of the weight. The chunk's
logits are then dropped, so nothing the size of [tokens, vocab] is kept for the backward pass,
and nothing is recomputed (recomputing each chunk in the backward pass cost 1.4-1.7x the CPU
time of the plain loss at vocabulary 128k, measured; the softmax over the vocabulary is most of it).
"""

from __future__ import annotations

import torch


class LinearCrossEntropy(torch.autograd.Function):
    """sum over tokens of cross_entropy(states @ weight.T + bias, targets), fp32 logits."""

    @staticmethod
    def forward(ctx, states, weight, bias, targets, tokens_per_chunk):
        grad_states = torch.empty_like(states)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and bias.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=states.device)
        for start in range(0, targets.numel(), tokens_per_chunk):
            chunk = slice(start, start + tokens_per_chunk)
            rows = states[chunk]
            expected = targets[chunk]
            logits = torch.nn.functional.linear(rows, weight, bias).float()
            picked = logits.gather(1, expected.unsqueeze(1))
            # logsumexp by hand, in place: torch.logsumexp allocates two more [tokens, vocab]
            # temporaries and the softmax below would exponentiate the chunk a second time.
            maxes = logits.amax(dim=-1, keepdim=True)
            exps = logits.sub_(maxes).exp_()
            sums = exps.sum(dim=-1, keepdim=True)
            total += (sums.log() + maxes - picked).sum()
            gradient = exps.div_(sums)  # the softmax, in place of the logits
            gradient.scatter_add_(1, expected.unsqueeze(1), torch.full_like(picked, -1.0))
            gradient = gradient.to(rows.dtype)
            grad_states[chunk] = gradient @ weight
            if grad_weight is not None:
                grad_weight.addmm_(gradient.t().float(), rows.float())
            if grad_bias is not None:
                grad_bias += gradient.float().sum(0)
        ctx.save_for_backward(grad_states, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_states, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_output.to(grad_states.dtype)
        grad_weight = None if grad_weight is None else (grad_weight * grad_output).to(ctx.weight_dtype)
        grad_bias = None if grad_bias is None else (grad_bias * grad_output).to(ctx.bias_dtype)
        return grad_states * scale, grad_weight, grad_bias, None, None


def plain_linear(head: torch.nn.Module) -> torch.nn.Linear | None:
    """The nn.Linear that computes ``head``'s output (through PEFT's modules_to_save wrapper), or
    None for anything else (a LoRA-wrapped or quantized head: the caller recomputes instead)."""
    if type(head) is torch.nn.Linear:
        return head
    saved = getattr(head, "modules_to_save", None)
    if isinstance(saved, torch.nn.ModuleDict):
        active = list(getattr(head, "active_adapters", []) or [])
        enabled = not getattr(head, "disable_adapters", False) and active and active[0] in saved
        return plain_linear(saved[active[0]] if enabled else head.original_module)
    return None
