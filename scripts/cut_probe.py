"""What one cut does to a trained network, before any training: full-resolution Dice on the fold's validation cases
after halving one unit (or a set of units), plain (as the pruning trainers cut) and with two repairs of the
segmentation heads a cut feeds: the removed channels' mean output added to the head's bias ("means kept"), and the
head refitted by least squares to its logits before the cut ("heads refitted").

    python scripts/cut_probe.py FOLD_DIR [--checkpoint checkpoint_final.pth] [--floor 2] [--json FILE]

FOLD_DIR: any trained fold of a PlainConvUNet plan (a pruning run's at its pruned widths). Channels go as STAMP
(activation) would pick them: the lowest norms after norm and nonlinearity, measured on the validation cases. Each
row cuts one unit to half its width (not below --floor); the last rows cut every full-resolution unit together, as
the paper study's lethal steps did (docs/learning.md). Deterministic: no training, no augmentation, no mirroring.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

from nnunet_lean import architecture, runs
from nnunet_lean.errors import RunError, exit_on_error
from nnunet_lean.pruning import ranking
from nnunet_lean.pruning.coupling import full_resolution_units, head_path
from nnunet_lean.pruning.network import PrunableUNet
from nnunet_lean.pruning.trainer import prunable_architecture
from nnunet_lean.tables import markdown_table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fold_dir")
    ap.add_argument("--checkpoint", default="checkpoint_final.pth")
    ap.add_argument("--floor", type=int, default=2, help="no unit is cut below this width")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    fold = runs.TrainedFold.open(args.fold_dir)
    predictor = runs.load_predictor([fold], args.checkpoint, use_mirroring=False, allow_tqdm=False)
    arch = prunable_architecture(architecture.from_configuration(predictor.configuration_manager))
    base = _network(predictor, arch)
    cases = validation_cases(fold, predictor.configuration_manager.data_identifier)
    norms, means = measure(base, [d for d, _ in cases])
    scores = ranking.normalise(norms)
    full = full_resolution_units(list(base.units.values()))
    plans = [[n] for n in base.units] + [full, [n for n in full if n.startswith("dec")]]
    rows = [dict(cut="none", **evaluate(predictor, base, cases), **{k: None for k in (
        "dice, means kept", "foreground fraction, means kept", "dice, heads refitted",
        "foreground fraction, heads refitted")})]
    for units in plans:
        picks = [(n, int(c)) for n in units for c in torch.argsort(scores[n])[:base.widths()[n] - max(
            args.floor, base.widths()[n] // 2)].tolist()]
        if not picks:
            continue
        what = ", ".join(f"{n} {base.widths()[n]}->{base.widths()[n] - sum(1 for u, _ in picks if u == n)}"
                         for n in units)
        plain, kept, refit = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
        plain.remove_picks(picks)
        keep_means(kept, picks, means)
        refit_heads(refit, picks, [d for d, _ in cases])
        r = evaluate(predictor, plain, cases)   # a cut that feeds no head: both repairs are the plain cut
        k, f = (evaluate(predictor, n, cases) for n in (kept, refit)) if _heads(base, picks) else (r, r)
        rows.append({"cut": what, **r, "dice, means kept": k["dice"],
                     "foreground fraction, means kept": k["foreground fraction"],
                     "dice, heads refitted": f["dice"], "foreground fraction, heads refitted": f["foreground fraction"]})
    print(f"{fold.path} ({args.checkpoint}), {len(cases)} validation cases, full-resolution output:\n")
    print(markdown_table([{k: (f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else v))
                           for k, v in r.items()} for r in rows]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _network(predictor, arch: dict, deep_supervision: bool = False) -> PrunableUNet:
    """The fold's weights in a PrunableUNet, in eval mode, without deep supervision unless asked (nnU-Net's
    predictor's own network may be a plain PlainConvUNet)."""
    net = architecture.build(arch, predictor.network.encoder.stages[0][0].convs[0].conv.in_channels,
                             predictor.label_manager.num_segmentation_heads, deep_supervision=deep_supervision)
    net.load_state_dict(predictor.list_of_parameters[0])
    return net.eval()


def validation_cases(fold: runs.TrainedFold, data_identifier: str) -> list:
    """(data, seg) of the fold's validation cases, preprocessed as nnU-Net trained on them."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    pre = Path(nnUNet_preprocessed) / fold.dataset_name
    splits = json.loads((pre / "splits_final.json").read_text())
    if not isinstance(fold.fold, int) or fold.fold >= len(splits):
        raise RunError(f"{fold.path}: cut_probe needs a numbered fold of splits_final.json")
    data_folder = pre / data_identifier
    ds = infer_dataset_class(str(data_folder))(str(data_folder), splits[fold.fold]["val"])
    out = []
    for key in splits[fold.fold]["val"]:
        data, seg, _, _ = ds.load_case(key)
        out.append((torch.from_numpy(np.asarray(data)).float(), np.asarray(seg)[0]))
    return out


def measure(net: PrunableUNet, volumes: list) -> tuple:
    """Per unit: channel norms after the nonlinearity (STAMP activation) and each channel's mean output (what its
    consumers receive), over whole cases."""
    sums = {}
    hooks = [net.block(n).register_forward_hook(
        lambda m, i, o, n=n: sums.__setitem__(n, sums.get(n, 0) + o.detach().float().flatten(2).mean(2)[0]))
        for n in net.units]
    with torch.no_grad(), ranking.ChannelNorms(net, "activation") as rec:
        for v in volumes:
            net(_padded(v)[None])
    for h in hooks:
        h.remove()
    return rec.sums, {n: s / len(volumes) for n, s in sums.items()}


def _heads(net: PrunableUNet, picks: list) -> dict:
    """Segmentation head path -> the unit that feeds it, for the units ``picks`` cut."""
    return {head_path(net.units[n]): n for n, _ in picks if head_path(net.units[n])}


def keep_means(net: PrunableUNet, picks: list, means: dict) -> None:
    """Remove ``picks``, first adding each removed channel's mean output, times its weight, to the bias of the
    segmentation head it feeds (a 1x1 conv that no norm follows: there a channel's constant part reaches the
    logits; behind every other consumer an InstanceNorm absorbs it)."""
    for path, unit in _heads(net, picks).items():
        gone = sorted({c for n, c in picks if n == unit})
        head = net.get_submodule(path)
        with torch.no_grad():
            head.bias += head.weight.flatten(1)[:, gone] @ means[unit][gone]
    net.remove_picks(picks)


def refit_heads(net: PrunableUNet, picks: list, volumes: list) -> None:
    """Remove ``picks``; every segmentation head that loses inputs is refitted by least squares (weights and bias on
    the channels left) to the logits it gave before the cut, over every voxel of ``volumes``."""
    heads = _heads(net, picks)
    if not heads:
        net.remove_picks(picks)
        return
    feats, logits = {}, {}
    hooks = [net.get_submodule(h).register_forward_hook(
        lambda m, i, o, h=h: (feats.setdefault(h, []).append(i[0].detach().flatten(2)),
                              logits.setdefault(h, []).append(o.detach().flatten(2)))) for h in heads]
    was_ds = net.decoder.deep_supervision
    net.decoder.deep_supervision = True   # every head runs
    with torch.no_grad():
        for v in volumes:
            net(_padded(v)[None])
    for h in hooks:
        h.remove()
    net.remove_picks(picks)
    net.decoder.deep_supervision = was_ds
    for path, unit in heads.items():
        gone = {c for n, c in picks if n == unit}
        keep = [c for c in range(feats[path][0].shape[1]) if c not in gone]
        a = torch.cat([f[0] for f in feats[path]], dim=1)[keep].T          # voxels x kept channels
        y = torch.cat([o[0] for o in logits[path]], dim=1).T                # voxels x classes
        x = torch.cat([a, torch.ones(len(a), 1)], dim=1)
        sol = torch.linalg.lstsq(x, y).solution                             # (kept + 1) x classes
        head = net.get_submodule(path)
        with torch.no_grad():
            head.weight.copy_(sol[:-1].T.reshape(head.weight.shape))
            head.bias.copy_(sol[-1])


def _padded(v: torch.Tensor, multiple: int = 16) -> torch.Tensor:
    pad = []
    for size in reversed(v.shape[1:]):
        pad += [0, (-size) % multiple]
    return torch.nn.functional.pad(v, pad)


def evaluate(predictor, net: PrunableUNet, cases: list) -> dict:
    """Foreground Dice pooled over the cases (nnU-Net's sliding window, no mirroring) and the predicted foreground
    fraction."""
    predictor.network = net.eval()
    tp = fp = fn = fg = total = 0
    with torch.no_grad():
        for data, seg in cases:
            pred = predictor.predict_sliding_window_return_logits(data).argmax(0).numpy()
            p, g = pred > 0, seg > 0
            tp, fp, fn = tp + int((p & g).sum()), fp + int((p & ~g).sum()), fn + int((~p & g).sum())
            fg, total = fg + int(p.sum()), total + p.size
    return {"dice": 2 * tp / max(1, 2 * tp + fp + fn), "foreground fraction": fg / total}


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "cut_probe.py"))
