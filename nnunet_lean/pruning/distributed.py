"""Keep DDP ranks in lock-step while pruning: every rank must remove the same channels."""
from __future__ import annotations

from typing import Callable, List, Mapping

import torch
import torch.distributed as dist

from nnunet_lean.pruning.ranking import Importance, Pick


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_rank0() -> bool:
    return not is_distributed() or dist.get_rank() == 0


def broadcast_from_rank0(tensors: List[torch.Tensor]) -> None:
    """Give every rank rank 0's values of ``tensors`` (in place)."""
    if is_distributed():
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)


def all_reduce_importance(importance: Mapping[str, torch.Tensor]) -> Importance:
    """Sum each unit's importance over all ranks (each rank saw different batches)."""
    if not is_distributed():
        return dict(importance)
    names = list(importance)
    flat = torch.cat([importance[n].flatten() for n in names]).clone()
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, start = {}, 0
    for n in names:
        size = importance[n].numel()
        out[n] = flat[start:start + size].view_as(importance[n])
        start += size
    return out


def decide_on_rank0(decide: Callable[[], List[Pick]]) -> List[Pick]:
    """Run ``decide`` (which may draw random numbers) on rank 0 and give its answer to every rank."""
    if not is_distributed():
        return decide()
    box = [decide() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return [(str(n), int(c)) for n, c in box[0]]
