"""Refit a segmentation head to what its inputs still carry, after a pruning step cut some of them.

Why (docs/learning.md, "Why a coarser output dies"; the runs: "The fix: refit the heads after each step"): STAMP's
norm ranking removes the sparse foreground detectors of a head's input unit first; the head, which read the
foreground off them, then predicts background everywhere, while a linear read-out of the channels left would still
find most of the foreground. Late in a run the poly schedule's small learning rates do not bring the head back. A
refit is that read-out: a class-balanced logistic regression of the labels at the head's stride on its input
features, fitted on training batches (eval mode), its foreground bias set for the best Dice, and kept only where it
scores a clearly higher Dice than the cut head on the same batches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_lean.pruning.distributed import broadcast_from_rank0, is_rank0

KEEP_MARGIN = 0.01          # a refit replaces the head only if its Dice is higher by more than this
FIT_VOXELS_PER_CLASS = 20000
EVAL_VOXELS = 400000


@dataclass
class HeadData:
    """One head's input features (voxels x channels) and labels (voxels, or voxels x regions): a class-balanced
    sample to fit on and a uniform one to score on."""
    x_fit: torch.Tensor
    y_fit: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor


def fit_linear(x: torch.Tensor, y: torch.Tensor, n_out: int, regions: bool = False,
               weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
               l2: float = 1e-3, max_iter: int = 100) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced logistic regression of ``y`` on ``x`` (voxels x channels): softmax over ``n_out`` classes
    (``y`` voxels, int), or with ``regions`` one sigmoid per region (``y`` voxels x regions, 0/1), as nnU-Net's heads
    are trained. Fitted on standardised inputs with a small L2 penalty (separable data stays finite), warm-started
    from ``weight`` (n_out x channels) / ``bias`` (n_out) where given. Returns (weight, bias) on the raw inputs."""
    x = x.double()
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = (x - mu) / sd
    if weight is None:
        w = torch.zeros(x.shape[1], n_out, dtype=torch.float64)
        b = torch.zeros(n_out, dtype=torch.float64)
    else:  # the same read-out on standardised inputs
        w = (weight.double().T * sd[:, None]).contiguous()
        b = bias.double() + mu @ weight.double().T
    w.requires_grad_(True)
    b.requires_grad_(True)
    if regions:
        yf = y.double()
        pos = yf.sum(0).clamp(min=1)
        neg = (1 - yf).sum(0).clamp(min=1)
        voxel_weight = torch.where(yf > 0, len(yf) / (2 * pos), len(yf) / (2 * neg))
    else:
        counts = torch.bincount(y, minlength=n_out).double()
        class_weight = counts.sum() / (int((counts > 0).sum()) * counts.clamp(min=1))
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = xs @ w + b
        if regions:
            loss = F.binary_cross_entropy_with_logits(logits, yf, weight=voxel_weight)
        else:
            loss = F.cross_entropy(logits, y, weight=class_weight)
        loss = loss + l2 * w.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        w_raw = w / sd[:, None]
        return w_raw.T.float().contiguous(), (b - mu @ w_raw).float()


def dice(logits: torch.Tensor, y: torch.Tensor, regions: bool = False) -> float:
    """Mean foreground Dice over the classes (regions) present in ``y`` or predicted, voxels pooled, as nnU-Net's
    pseudo-Dice; nan where there is no foreground at all."""
    if regions:
        pred, true = logits > 0, y > 0
    else:
        n = logits.shape[1]
        pred = F.one_hot(logits.argmax(1), n)[:, 1:].bool()
        true = F.one_hot(y, n)[:, 1:].bool()
    tp = (pred & true).sum(0).double()
    denom = (pred.sum(0) + true.sum(0)).double()
    scores = (2 * tp / denom)[denom > 0]
    return float(scores.mean()) if len(scores) else math.nan


def _sample(key: torch.Tensor, per_class: int, total: int, generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
    """Indices of a class-balanced sample (at most ``per_class`` voxels of each value of ``key``) and of a uniform
    one (at most ``total`` voxels)."""
    key = key.cpu()
    fit = []
    for k in torch.unique(key):
        idx = torch.nonzero(key == k).flatten()
        fit.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    uniform = torch.randperm(len(key), generator=generator)[:total]
    return torch.cat(fit), uniform


def collect(net: nn.Module, heads: Sequence[str], batches: Iterable[dict], regions: bool = False,
            ignore_label: Optional[int] = None, n_batches: int = 1, generator: Optional[torch.Generator] = None
            ) -> Dict[str, HeadData]:
    """Run ``batches`` (nnU-Net training batches: "data", "target" with one target per deep-supervision output, full
    resolution first) through ``net`` in eval mode and sample each head's input features and labels. A head is
    matched to the target of its output's shape. Voxels under the ignore label are left out."""
    generator = generator or torch.Generator().manual_seed(0)
    seen: Dict[str, torch.Tensor] = {}
    hooks = [net.get_submodule(h).register_forward_hook(lambda m, i, o, h=h: seen.__setitem__(h, i[0]))
             for h in heads]
    parts: Dict[str, List[Tuple[torch.Tensor, ...]]] = {h: [] for h in heads}
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    try:
        with torch.no_grad():
            for batch in batches:
                seen.clear()
                net(batch["data"].to(device))
                targets = batch["target"] if isinstance(batch["target"], (list, tuple)) else [batch["target"]]
                for h in heads:
                    if h not in seen:   # a head the forward pass did not use (deep supervision off)
                        continue
                    x = seen[h].float()
                    target = next((t for t in targets if t.shape[2:] == x.shape[2:]), None)
                    if target is None:
                        raise RuntimeError(f"no training target has the shape of {h}'s output {tuple(x.shape[2:])}")
                    x = x.movedim(1, -1).reshape(-1, x.shape[1]).cpu()
                    t = target.to("cpu")
                    if regions:
                        valid = ~t[:, -1].bool().flatten() if ignore_label is not None else None
                        t = t[:, :-1] if ignore_label is not None else t
                        y = t.movedim(1, -1).reshape(-1, t.shape[1]).float()
                        key = y.any(1).long()
                    else:
                        y = t[:, 0].flatten().long()
                        valid = (y != ignore_label) if ignore_label is not None else None
                        y = y.clamp(min=0)   # -1 outside a cropped nonzero mask: background, as nnU-Net trains it
                        key = y
                    if valid is not None:
                        x, y, key = x[valid], y[valid], key[valid]
                    if len(key) == 0:   # every voxel under the ignore label (a coarse output of sparse labels)
                        continue
                    fit, uniform = _sample(key, -(-FIT_VOXELS_PER_CLASS // n_batches), -(-EVAL_VOXELS // n_batches),
                                           generator)
                    parts[h].append((x[fit], y[fit], x[uniform], y[uniform]))
    finally:
        for hk in hooks:
            hk.remove()
        net.train(was_training)
    return {h: HeadData(*(torch.cat(z) for z in zip(*p))) for h, p in parts.items() if p}


def calibrate_bias(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   regions: bool = False) -> Tuple[torch.Tensor, float]:
    """``bias`` with its foreground outputs shifted by the one amount (-6 .. 6) that maximises the Dice on (x, y), and
    that Dice: a class-balanced fit predicts foreground as if every class were as frequent as the background."""
    base = x @ weight.T
    fg = torch.ones_like(bias)
    if not regions:
        fg[0] = 0
    best_bias, best = bias, dice(base + bias, y, regions)
    for delta in torch.linspace(-6, 6, 49):
        shifted = bias + delta * fg
        d = dice(base + shifted, y, regions)
        if d > best or math.isnan(best):
            best_bias, best = shifted, d
    return best_bias, best


def refit(head: nn.Module, data: HeadData, regions: bool = False) -> dict:
    """Refit ``head`` (a 1x1 conv) on ``data`` (:func:`fit_linear`, then :func:`calibrate_bias` on the uniform
    sample) and keep the refit if it scores a Dice higher by more than KEEP_MARGIN on that sample; every class
    (region) must occur in the fit sample, else the head stays. Returns what happened."""
    n_out = head.out_channels
    w_old, b_old = head.weight.detach().flatten(1).cpu().float(), head.bias.detach().cpu().float()
    before = dice(data.x_eval @ w_old.T + b_old, data.y_eval, regions)
    present = (data.y_fit.sum(0) > 0).all() and (data.y_fit.sum(0) < len(data.y_fit)).all() if regions \
        else len(torch.unique(data.y_fit)) == n_out
    if not present:
        return {"dice_cut": _or_none(before), "dice_refit": None, "refit": False}
    w, b = fit_linear(data.x_fit, data.y_fit, n_out, regions, w_old, b_old)
    b, after = calibrate_bias(data.x_eval, data.y_eval, w, b, regions)
    keep = after > (0.0 if math.isnan(before) else before) + KEEP_MARGIN
    if keep:
        with torch.no_grad():
            head.weight.copy_(w.view_as(head.weight))
            head.bias.copy_(b)
    return {"dice_cut": _or_none(before), "dice_refit": _or_none(after), "refit": bool(keep)}


def _or_none(d: float) -> Optional[float]:
    """None for a Dice without foreground (nan): the record goes to strict JSON."""
    return None if math.isnan(d) else d


def refit_heads(net: nn.Module, names: Sequence[str], draw_batches: Callable[[int], Iterable[dict]], n_batches: int,
                regions: bool = False, ignore_label: Optional[int] = None, seed: int = 0) -> Dict[str, dict]:
    """:func:`refit` each head in ``names`` on ``n_batches`` batches from ``draw_batches(n)``. Under DDP rank 0
    draws, fits and decides, and every rank gets its heads (the other ranks return {})."""
    out: Dict[str, dict] = {}
    if names and is_rank0():
        data = collect(net, names, draw_batches(n_batches), regions, ignore_label, n_batches,
                       torch.Generator().manual_seed(seed))
        out = {h: refit(net.get_submodule(h), d, regions) for h, d in data.items()}
    broadcast_from_rank0([t for h in names for t in net.get_submodule(h).parameters()])
    return out
