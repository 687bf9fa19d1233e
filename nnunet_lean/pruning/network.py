"""PrunableUNet: nnU-Net's PlainConvUNet with per-conv widths that can shrink (and regrow on load).

All surgery goes through :meth:`PrunableUNet.select`, driven by the coupling table in
:mod:`nnunet_lean.pruning.coupling`. ``load_state_dict`` first reshapes every unit to the widths
of the incoming tensors, so nnU-Net's predictor (one network, ``load_state_dict`` per fold) can
load folds pruned to different widths. The state dict itself stays a plain PlainConvUNet one.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional

import torch
from torch import nn
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_lean.pruning.coupling import Unit, coupling_table


class TargetedChannelDropout(nn.Module):
    """Zeroes whole channels with probability ``p`` in training (STAMP's targeted dropout)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0.0:
            return x
        shape = x.shape[:2] + (1,) * (x.ndim - 2)
        keep = (torch.rand(shape, device=x.device) >= self.p).to(x.dtype)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


def _take(t: torch.Tensor, dim: int, idx: torch.Tensor) -> torch.Tensor:
    """``t`` indexed by ``idx`` along ``dim``; entries of -1 give zero slices (a regrown channel)."""
    out = t.detach().index_select(dim, idx.clamp(min=0)).clone()
    if (idx < 0).any():
        shape = [1] * out.ndim
        shape[dim] = -1
        out = out * (idx >= 0).to(out.dtype).view(shape)
    return out


def _replace(module: nn.Module, name: str, dim: int, idx: torch.Tensor, log: Optional[list] = None) -> None:
    t = getattr(module, name, None)
    if t is None:
        return
    new = _take(t, dim, idx)
    if isinstance(t, nn.Parameter):
        param = nn.Parameter(new, requires_grad=t.requires_grad)
        setattr(module, name, param)
        if log is not None:
            log.append((t, param, dim, idx))
    else:
        setattr(module, name, new)  # a registered buffer (running stats)


class PrunableUNet(PlainConvUNet):
    """PlainConvUNet + channel surgery. ``unit_widths`` builds it directly at pruned widths."""

    def __init__(self, *args, unit_widths: Optional[Mapping[str, int]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.units: Dict[str, Unit] = {u.name: u for u in coupling_table(
            [len(st[-1].convs) for st in self.encoder.stages], [len(st.convs) for st in self.decoder.stages])}
        for u in self.units.values():
            block = self.get_submodule(u.path)
            block.targeted_dropout = TargetedChannelDropout()
            block.all_modules.append(block.targeted_dropout)
        self.pruning_state: dict = {}  # the pruning trainer's bookkeeping (saved beside checkpoints)
        # while a list: every replaced parameter as (old, new, dim, kept indices), in order (carry_state uses it)
        self.surgery_log: Optional[list] = None
        for name, width in (unit_widths or {}).items():
            self.resize(name, int(width))

    # --- inspection -------------------------------------------------------------------------
    def block(self, name: str) -> nn.Module:
        return self.get_submodule(self.units[name].path)

    def widths(self) -> Dict[str, int]:
        """Output channels of every unit, in coupling-table order."""
        return {n: self.block(n).conv.out_channels for n in self.units}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- surgery ------------------------------------------------------------------------------
    def select(self, name: str, idx: Iterable[int]) -> None:
        """Unit ``name`` keeps output channels ``idx`` in this order (-1: a new zero channel)."""
        unit, block = self.units[name], self.block(name)
        device = block.conv.weight.device
        idx = torch.as_tensor(list(idx) if not torch.is_tensor(idx) else idx, dtype=torch.long, device=device)
        if idx.numel() < 1:
            raise ValueError(f"{name}: a conv must keep at least one channel")
        old = block.conv.out_channels
        log = self.surgery_log
        _replace(block.conv, "weight", 0, idx, log)
        _replace(block.conv, "bias", 0, idx, log)
        block.conv.out_channels = block.output_channels = idx.numel()
        norm = getattr(block, "norm", None)
        if norm is not None:
            for attr in ("weight", "bias", "running_mean", "running_var"):
                _replace(norm, attr, 0, idx, log)
            norm.num_features = idx.numel()
        for c in unit.consumers:
            mod = self.get_submodule(c.path)
            offset = self.get_submodule(c.offset_of).out_channels if c.offset_of else 0
            total = mod.weight.shape[c.dim]
            shifted = torch.where(idx >= 0, idx + offset, idx)
            full = torch.cat([torch.arange(offset, device=device), shifted,
                              torch.arange(offset + old, total, device=device)])
            _replace(mod, "weight", c.dim, full, log)
            mod.in_channels = mod.weight.shape[c.dim]
        self._sync_bookkeeping()

    def remove(self, name: str, channels: Iterable[int]) -> None:
        """Prune output ``channels`` of unit ``name``."""
        drop = set(int(c) for c in channels)
        self.select(name, [c for c in range(self.block(name).conv.out_channels) if c not in drop])

    def remove_picks(self, picks: Iterable) -> None:
        """Prune (unit, channel) pairs, channel indices as before this call."""
        by_unit: Dict[str, List[int]] = {}
        for n, c in picks:
            by_unit.setdefault(n, []).append(int(c))
        for n, chans in by_unit.items():
            self.remove(n, chans)

    def carry_state(self, state: Mapping[nn.Parameter, dict]) -> Dict[nn.Parameter, dict]:
        """Per-parameter optimizer state (Adam's moments) of the parameters before the surgery recorded in
        ``surgery_log``, moved onto the parameters after it: tensors shaped like the parameter are cut as
        the parameter was (a regrown channel starts at zero); other entries (Adam's step) are kept."""
        carried = {p: dict(v) for p, v in state.items()}
        for old, new, dim, idx in self.surgery_log or []:
            if old in carried:
                carried[new] = {k: _take(v, dim, idx) if torch.is_tensor(v) and v.shape == old.shape else v
                                for k, v in carried.pop(old).items()}
        alive = {id(p) for p in self.parameters()}
        return {p: v for p, v in carried.items() if id(p) in alive}

    def resize(self, name: str, width: int) -> None:
        """Make unit ``name`` exactly ``width`` wide (truncate, or append zero channels)."""
        cur = self.block(name).conv.out_channels
        if width != cur:
            self.select(name, list(range(min(cur, width))) + [-1] * max(0, width - cur))

    def _sync_bookkeeping(self) -> None:
        for n in self.units:
            b = self.block(n)
            b.input_channels = b.conv.in_channels
        for st in self.encoder.stages:
            st[-1].output_channels = st[-1].convs[-1].conv.out_channels
        for st in self.decoder.stages:
            st.output_channels = st.convs[-1].conv.out_channels
        self.encoder.output_channels = [st[-1].output_channels for st in self.encoder.stages]

    # --- targeted dropout ---------------------------------------------------------------------
    def set_dropout(self, probabilities: Mapping[str, float]) -> None:
        for n, p in probabilities.items():
            self.block(n).targeted_dropout.p = float(p)

    def dropout(self) -> Dict[str, float]:
        return {n: self.block(n).targeted_dropout.p for n in self.units}

    # --- loading (nnU-Net's predictor calls this once per fold) --------------------------------
    def reshape_to(self, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> None:
        for n, u in self.units.items():
            w = state_dict.get(f"{prefix}{u.path}.conv.weight")
            if w is not None:
                self.resize(n, int(w.shape[0]))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.reshape_to(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)



def unit_widths_of(state_dict: Mapping[str, torch.Tensor], units: Iterable[Unit]) -> Dict[str, int]:
    return {u.name: int(state_dict[f"{u.path}.conv.weight"].shape[0]) for u in units}


def stage_widths(widths: Mapping[str, int]) -> Dict[str, List[int]]:
    """Group unit widths by block: {"enc0": [w0, w1], ..., "dec0": [...]}."""
    out: Dict[str, List[int]] = {}
    for name, w in widths.items():
        out.setdefault(name.split(".")[0], []).append(w)
    return out
