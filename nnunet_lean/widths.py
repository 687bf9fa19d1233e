"""Per-stage channel-width schedules: the one place where widths are computed.

The planner, the trainers and the plan modifier all turn a width choice into a list of
per-stage feature counts through :func:`resolve`, so they can never disagree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from nnunet_lean.errors import LeanError

Widths = List[int]


class WidthError(LeanError, ValueError):
    """A width request that cannot be met; the message names the fix."""


def doubling(n_stages: int, base: int = 32, cap: int = 320) -> Widths:
    """nnU-Net's rule: ``min(cap, base * 2**i)`` for stage i."""
    _check_positive(n_stages=n_stages, base=base, cap=cap)
    return [min(cap, base * 2 ** i) for i in range(n_stages)]


def lean(n_stages: int, nf: int) -> Widths:
    """LUnet: the same ``nf`` channels at every stage."""
    _check_positive(n_stages=n_stages, nf=nf)
    return [nf] * n_stages


def scaled(widths: Sequence[int], factor: float) -> Widths:
    """Linear scaling of any schedule (the paper's Unet 75/50/25 %), rounded half up, >= 1."""
    if not factor > 0:
        raise WidthError(f"scale must be > 0, got {factor}")
    return [max(1, int(math.floor(w * factor + 0.5))) for w in widths]


def largest_lean_nf(count_params: Callable[[Widths], int], n_stages: int, budget: int) -> int:
    """Largest ``nf`` whose lean network has at most ``budget`` parameters.

    ``count_params`` maps a width list to a parameter count and must grow with ``nf``.
    Raises WidthError when even ``nf = 1`` is over budget.
    """
    def fits(nf: int) -> bool:
        return count_params(lean(n_stages, nf)) <= budget

    if not fits(1):
        raise WidthError(f"a budget of {budget} parameters is too small even for Nf=1 "
                         f"({count_params(lean(n_stages, 1))} parameters)")
    lo, hi = 1, 2
    while fits(hi):  # exponential search for an upper bound, then bisect
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


@dataclass(frozen=True)
class WidthChoice:
    """What a user asked for. At most one of the fields is set; none keeps the plan's widths.

    nf: constant width (LUnet), >= 1.
    nf_from_plan: constant width equal to the plan's first-stage width (``WidthChoice.plan_base_lean()``,
      what ``nnUNetTrainerLean`` applies: 32 on stock plans).
    scale: linear factor applied to the plan's widths.
    budget: largest lean nf within this many parameters.
    base: nnU-Net's doubling rule from this first-stage width, capped at the plan's widest stage
      (the paper's "Unet Nf=4" is base=4 on a 5-stage plan).
    """
    nf: Optional[int] = None
    nf_from_plan: bool = False
    scale: Optional[float] = None
    budget: Optional[int] = None
    base: Optional[int] = None

    @classmethod
    def plan_base_lean(cls) -> "WidthChoice":
        return cls(nf_from_plan=True)

    def __post_init__(self) -> None:
        given = [k for k in ("nf", "scale", "budget", "base") if getattr(self, k) is not None]
        given += ["nf_from_plan"] if self.nf_from_plan else []
        if len(given) > 1:
            raise WidthError(f"give only one of nf, scale, budget, base (got {', '.join(given)})")
        if self.nf is not None and self.nf < 1:
            raise WidthError(f"Nf must be >= 1, got {self.nf}")
        if self.scale is not None and not self.scale > 0:
            raise WidthError(f"scale must be > 0, got {self.scale}")
        if self.budget is not None and self.budget < 1:
            raise WidthError(f"budget must be >= 1 parameter, got {self.budget}")
        if self.base is not None and self.base < 1:
            raise WidthError(f"base must be >= 1, got {self.base}")


def resolve(choice: WidthChoice, plan_widths: Sequence[int],
            count_params: Optional[Callable[[Widths], int]] = None) -> Widths:
    """Apply a :class:`WidthChoice` to the widths a plan holds."""
    n = len(plan_widths)
    if choice.nf_from_plan:
        return lean(n, int(plan_widths[0]))
    if choice.nf is not None:
        return lean(n, choice.nf)
    if choice.scale is not None:
        return scaled(plan_widths, choice.scale)
    if choice.budget is not None:
        if count_params is None:
            raise TypeError("a parameter budget needs a parameter counter")
        return lean(n, largest_lean_nf(count_params, n, choice.budget))
    if choice.base is not None:
        return doubling(n, choice.base, max(int(w) for w in plan_widths))
    return [int(w) for w in plan_widths]


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise WidthError(f"{name} must be >= 1, got {v}")
