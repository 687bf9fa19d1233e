"""The network nnU-Net's predictor is given: an adapter around a backend.

nnUNetPredictor calls ``self.network(x)`` only inside ``_internal_maybe_mirror_and_predict`` (which also
mirrors), and otherwise ``.to()``, ``.eval()`` and, once per fold, ``load_state_dict(params)``. So the
adapter's ``load_state_dict`` selects the fold's compiled model, ``__call__`` runs it, ``.to``/``.eval``
change nothing; everything else (preprocessing, sliding window, Gaussian weighting, mirroring,
resampling, export, multi-processing) stays nnU-Net's.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from typing import Callable, Dict, Sequence

import numpy as np
import torch
from torch import nn

from nnunet_lean.deploy.errors import DeployError


TIMES_ENV = "NNUNET_LEAN_NETWORK_TIMES"   # a JSON path: benchmarks read how long the network calls took
_calls = {"calls": 0, "seconds": 0.0}


def _timed(run: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run one network call; with TIMES_ENV set, count its seconds (written when the process ends)."""
    if TIMES_ENV not in os.environ:
        return run()
    if not _calls["calls"]:
        atexit.register(lambda: open(os.environ[TIMES_ENV], "w").write(json.dumps(_calls)))
    start = time.perf_counter()
    out = run()
    _calls["calls"] += 1
    _calls["seconds"] += time.perf_counter() - start
    return out


def fold_parameters(folds: Sequence[str]) -> list:
    """What the predictor's ``list_of_parameters`` holds for the adapter: one selector per fold."""
    return [{"fold": str(f)} for f in folds]


class BackendNetwork(nn.Module):
    """One compiled model per fold; ``load_state_dict({"fold": f})`` picks fold ``f``."""

    def __init__(self, runners: Dict[str, Callable[[np.ndarray], np.ndarray]], spatial_multiple: Sequence[int]):
        super().__init__()
        self.runners, self.spatial_multiple = runners, tuple(spatial_multiple)
        self.current = next(iter(runners))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        fold = state_dict.get("fold") if isinstance(state_dict, dict) else None
        if fold not in self.runners:
            raise DeployError(f"this export holds folds {', '.join(self.runners)}, not {fold!r}")
        self.current = fold

    def to(self, *args, **kwargs):
        return self

    def train(self, mode: bool = True):
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bad = [s for s, m in zip(x.shape[2:], self.spatial_multiple) if s % m]
        if bad:
            raise DeployError(f"input {tuple(x.shape)}: spatial sizes must be multiples of {self.spatial_multiple}")
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return _timed(lambda: torch.from_numpy(self.runners[self.current](x)))


class TorchNetwork(nn.Module):
    """The trained torch network itself, optionally under CPU bf16 autocast (logits back in fp32)."""

    def __init__(self, network: nn.Module, precision: str = "fp32"):
        super().__init__()
        self.network, self.precision = network, precision

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.network.load_state_dict(state_dict, strict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16" else contextlib.nullcontext()
        with ctx:
            return _timed(lambda: self.network(x).float())
