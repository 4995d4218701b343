"""Helpers that make one code path serve 1 process and W processes alike.

A leaf module: the methods (losses over the gathered batch) and the training loop both use it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def global_batch(local: torch.Tensor, gather_distributed: bool) -> tuple[bool, int]:
    """Whether a loss reduces over every rank, and the rows of the batch it then sees."""
    _, world = rank_and_world()
    gathered = gather_distributed and world > 1
    return gathered, local.shape[0] * (world if gathered else 1)


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every rank along dim 0, keeping gradients.

    The backward pass sums each rank's gradient into the rank that produced the rows, so
    with gradients averaged over ranks (DDP) a W-process loss over the gathered batch
    trains exactly like one process with the whole batch.
    """
    if not is_distributed():
        return tensor
    return torch.cat(dist_fn.all_gather(tensor.contiguous()), dim=0)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a (detached) tensor over ranks, for logging."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over ranks, keeping gradients (for losses that are not a mean of
    per-sample terms, e.g. log(1 + mean) or a Frobenius norm over the global batch)."""
    if not is_distributed():
        return tensor
    return dist_fn.all_reduce(tensor)
