"""STAMP ranking (Dinsdale et al., MedIA 2022), targeted-dropout probabilities, and the paper's
random baselines. Pure functions of per-unit importance vectors and widths, plus the
activation recorder that produces those vectors.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Tuple, Union

import numpy as np
import torch

Importance = Dict[str, torch.Tensor]   # unit name -> one value per output channel
Pick = Tuple[str, int]                 # (unit, channel index before this step's removals)
Floors = Union[int, Mapping[str, int]]  # the width no unit goes below: one for all, or one per unit

STRATEGIES = ("stamp", "random_stamp_block", "random_widest")


POINTS = ("conv", "activation")


class ChannelNorms:
    """Context manager: for every unit, the L2 norm of each channel's output over space, averaged over
    the batch and summed over forward passes, in fp32, measured at ``point``:

    * ``"conv"``: the raw conv output, before any normalisation (STAMP's reference code);
    * ``"activation"``: after norm and nonlinearity (before targeted dropout). After an affine
      InstanceNorm this norm is set mostly by the norm's gamma and beta, not by the data.
    """

    def __init__(self, net, point: str = "conv"):
        if point not in POINTS:
            raise ValueError(f"unknown importance point {point!r}: one of {', '.join(POINTS)}")
        self.net, self.point = net, point
        self.sums: Importance = {}
        self._handles = []

    def __enter__(self) -> "ChannelNorms":
        for name in self.net.units:
            block = self.net.block(name)
            if self.point == "conv":
                target = block.conv
            else:
                target = getattr(block, "nonlin", None) or getattr(block, "norm", None) or block.conv
            self._handles.append(target.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def hook(_module, _inputs, out):
            v = out.detach().float().flatten(2).norm(dim=2).mean(0)
            self.sums[name] = self.sums[name] + v if name in self.sums else v
        return hook

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def normalise(importance: Mapping[str, torch.Tensor]) -> Importance:
    """Each unit's vector divided by its own L2 norm (why STAMP prunes the widest layers first:
    n equal filters score 1/sqrt(n) each)."""
    return {n: v / v.norm().clamp_min(1e-12) for n, v in importance.items()}


def floors_of(min_channels: Floors, units: Iterable[str]) -> Dict[str, int]:
    """Every unit's floor; a unit a mapping does not name gets 1 (a unit keeps a channel)."""
    units = list(units)
    floors = ({n: int(min_channels) for n in units} if isinstance(min_channels, int)
              else {n: int(min_channels.get(n, 1)) for n in units})
    low = {n: f for n, f in floors.items() if f < 1}
    if low:
        raise ValueError(f"min_channels must be >= 1 (a unit keeps a channel), got {low}")
    return floors


def stamp_picks(scores: Mapping[str, torch.Tensor], k: int, min_channels: Floors = 1) -> List[Pick]:
    """The k globally lowest-scoring channels, never taking a unit below its floor (``min_channels``)."""
    floor = floors_of(min_channels, scores)
    flat = sorted((float(v), n, c) for n, vec in scores.items() for c, v in enumerate(vec.tolist()))
    left = {n: len(vec) for n, vec in scores.items()}
    picks: List[Pick] = []
    for _, n, c in flat:
        if len(picks) == k:
            break
        if left[n] > floor[n]:
            picks.append((n, c))
            left[n] -= 1
    return picks


def random_picks_in(units: List[str], widths: Mapping[str, int], rng: np.random.Generator,
                    min_channels: Floors = 1) -> List[Pick]:
    """One random channel in each listed unit (a unit listed twice loses two distinct channels), never
    taking a unit below its floor."""
    floor = floors_of(min_channels, widths)
    taken: Dict[str, set] = {}
    picks: List[Pick] = []
    for n in units:
        free = [c for c in range(widths[n]) if c not in taken.setdefault(n, set())]
        if len(free) <= floor[n]:
            continue
        c = int(rng.choice(free))
        taken[n].add(c)
        picks.append((n, c))
    return picks


def widest_picks(widths: Mapping[str, int], k: int, rng: np.random.Generator,
                 min_channels: Floors = 1) -> List[Pick]:
    """k times: a random channel of the currently widest unit above its floor (ties broken at random)."""
    floor = floors_of(min_channels, widths)
    w = dict(widths)
    order: List[str] = []
    for _ in range(k):
        open_units = {u: v for u, v in w.items() if v > floor[u]}
        if not open_units:
            break
        top = max(open_units.values())
        n = str(rng.choice(sorted(u for u, v in open_units.items() if v == top)))
        order.append(n)
        w[n] -= 1
    return random_picks_in(order, widths, rng, min_channels)


def choose(strategy: str, scores: Mapping[str, torch.Tensor], widths: Mapping[str, int], k: int,
           rng: np.random.Generator, min_channels: Floors = 1) -> List[Pick]:
    """Up to k (unit, channel) picks of ``strategy``; no unit goes below its floor, ``min_channels`` (one for
    all units or one per unit; fewer picks when every candidate is at its floor)."""
    floors_of(min_channels, widths)  # refuses a floor below 1 before any strategy runs
    if strategy == "stamp":
        return stamp_picks(scores, k, min_channels)
    if strategy == "random_stamp_block":
        return random_picks_in([n for n, _ in stamp_picks(scores, k, min_channels)], widths, rng, min_channels)
    if strategy == "random_widest":
        return widest_picks(widths, k, rng, min_channels)
    raise ValueError(f"unknown pruning strategy {strategy!r}: one of {', '.join(STRATEGIES)}")


def dropout_probabilities(scores: Mapping[str, torch.Tensor], p_max: float = 0.1) -> Dict[str, float]:
    """STAMP's targeted dropout: p_l = p_max * mean reverse rank of layer l / max over layers,
    where a channel's reverse rank is high when its score is low (likely to be pruned next)."""
    names = list(scores)
    flat = torch.cat([scores[n].float().flatten() for n in names])
    order = torch.argsort(flat, descending=True)  # most important first
    reverse_rank = torch.empty_like(flat)
    reverse_rank[order] = torch.arange(1, len(flat) + 1, dtype=flat.dtype)
    means, start = {}, 0
    for n in names:
        size = scores[n].numel()
        means[n] = float(reverse_rank[start:start + size].mean())
        start += size
    top = max(means.values())
    return {n: p_max * m / top for n, m in means.items()}


def without(scores: Mapping[str, torch.Tensor], picks: List[Pick]) -> Importance:
    """The scores left after removing the picked channels."""
    drop: Dict[str, set] = {}
    for n, c in picks:
        drop.setdefault(n, set()).add(c)
    return {n: v[[i for i in range(len(v)) if i not in drop.get(n, ())]] for n, v in scores.items()}
