"""Can a trained fold's segmentation heads still read their inputs? Per deep-supervision output: the head's Dice on
the fold's validation cases, and the Dice of a linear probe (class-balanced logistic regression) fitted on the head's
input features to the true labels at that resolution, with the inputs' mean over foreground and background voxels.

    python scripts/head_probe.py FOLD_DIR [FOLD_DIR ...] [--checkpoint checkpoint_final.pth] [--json FILE] [--cut]

--cut: also halve each head's input unit as STAMP (activation) would pick (cut_probe's ranking: lowest norms after
the nonlinearity over the validation cases; not below 2) and report which kind of channel went (foreground detectors:
mean over the hippocampus above the mean over background), the head's Dice and the full-resolution Dice after the
cut, and the probe's Dice on what is left (what a head refitted to the labels would score).

A dead output (head Dice ~0) whose probe scores well still has the information in its inputs: the head, not the
features, stopped reading it (docs/learning.md, "Why a coarser output dies"). Whole cases, no mirroring; the probe
is fitted and scored on the same voxels (a few parameters per class on 10^5 voxels). Labels at a coarser output are
the full-resolution labels sampled at its stride, as nnU-Net's deep-supervision targets are.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cut_probe import _network, _padded, measure, validation_cases  # noqa: E402  (cut_probe's loading, cases,
# padding and ranking)

from nnunet_lean import architecture, runs  # noqa: E402
from nnunet_lean.errors import exit_on_error  # noqa: E402
from nnunet_lean.pruning import heads, ranking  # noqa: E402
from nnunet_lean.pruning.coupling import head_path  # noqa: E402
from nnunet_lean.pruning.trainer import prunable_architecture  # noqa: E402
from nnunet_lean.tables import markdown_table  # noqa: E402


def foreground_dice(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Dice of foreground (any label > 0) against foreground, voxels pooled."""
    p, g = pred > 0, labels > 0
    return float(2 * (p & g).sum() / max(1, int(p.sum() + g.sum())))


def linear_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The pruning trainers' head refit (class-balanced logistic regression, nnunet_lean.pruning.heads) of ``y``
    (voxels) on ``x`` (voxels x channels), from zero; returns its argmax prediction per voxel."""
    w, b = heads.fit_linear(x, y, n_classes)
    return (x @ w.T + b).argmax(1)


def head_inputs(net, cases: list) -> dict:
    """Per segmentation head (full resolution first): its stride, inputs (voxels x channels), logits (voxels x
    classes) and labels (voxels) over ``cases``, cropped to each case's own extent."""
    names = [f"decoder.seg_layers.{i}" for i in reversed(range(len(net.decoder.seg_layers)))]
    seen = {}
    hooks = [net.get_submodule(h).register_forward_hook(lambda m, i, o, h=h: seen.__setitem__(h, (i[0], o)))
             for h in names]
    out = {h: {"x": [], "logits": [], "y": []} for h in names}
    with torch.no_grad():
        for data, seg in cases:
            padded = _padded(data)
            net(padded[None])
            for h in names:
                x, logits = seen[h]
                stride = padded.shape[1] // x.shape[2]
                lab = np.ascontiguousarray(seg[::stride, ::stride, ::stride])
                crop = (0, slice(None)) + tuple(slice(0, s) for s in lab.shape)
                out[h]["stride"] = stride
                out[h]["x"].append(x[crop].flatten(1).T)
                out[h]["logits"].append(logits[crop].flatten(1).T)
                out[h]["y"].append(torch.from_numpy(lab).flatten().long().clamp(min=0))  # -1 (outside nnU-Net's
                # nonzero mask, where a plan crops to it) counts as background, as in the Dice of cut_probe
    for hk in hooks:
        hk.remove()
    return {h: {"stride": d["stride"], **{k: torch.cat(d[k]) for k in ("x", "logits", "y")}} for h, d in out.items()}


def cut_rows(net, cases: list, probed: dict, n_classes: int) -> list:
    """Each head's input unit halved (STAMP activation picks, floor 2): what went, and what the head and the
    full-resolution output score after the cut, before any training."""
    import copy

    norms, _ = measure(net, [d for d, _ in cases])
    scores = ranking.normalise(norms)
    full = next(iter(probed))
    rows = []
    for head, d in probed.items():
        unit = next(n for n, u in net.units.items() if head_path(u) == head)
        width = net.widths()[unit]
        picks = [(unit, int(c)) for c in torch.argsort(scores[unit])[:width - max(2, width // 2)].tolist()]
        fg_detector = d["x"][d["y"] > 0].mean(0) > d["x"][d["y"] == 0].mean(0)
        cut = copy.deepcopy(net)
        cut.remove_picks(picks)
        after = head_inputs(cut, cases)
        rows.append({"head": head, "unit": f"{unit} {width}->{width - len(picks)}",
                     "foreground detectors cut / in the unit": f"{sum(bool(fg_detector[c]) for _, c in picks)} / "
                                                               f"{int(fg_detector.sum())}",
                     "head dice before": foreground_dice(d["logits"].argmax(1), d["y"]),
                     "head dice after the cut": foreground_dice(after[head]["logits"].argmax(1), after[head]["y"]),
                     "probe dice after the cut": foreground_dice(
                         linear_probe(after[head]["x"], after[head]["y"], n_classes), after[head]["y"]),
                     "full-resolution dice after the cut": foreground_dice(after[full]["logits"].argmax(1),
                                                                           after[full]["y"])})
    return rows


def probe_fold(fold_dir: str, checkpoint: str, cut: bool = False) -> tuple:
    fold = runs.TrainedFold.open(fold_dir)
    predictor = runs.load_predictor([fold], checkpoint, use_mirroring=False, allow_tqdm=False)
    n_classes = predictor.label_manager.num_segmentation_heads
    net = _network(predictor, prunable_architecture(architecture.from_configuration(predictor.configuration_manager)),
                   deep_supervision=True)
    cases = validation_cases(fold, predictor.configuration_manager.data_identifier)
    probed = head_inputs(net, cases)
    rows = []
    for head, d in probed.items():
        fg, bg = d["x"][d["y"] > 0].mean(0), d["x"][d["y"] == 0].mean(0)
        rows.append({"fold": str(fold.path), "output": "full" if d["stride"] == 1 else f"1/{d['stride']}",
                     "head": head, "inputs": int(d["x"].shape[1]),
                     "head dice": foreground_dice(d["logits"].argmax(1), d["y"]),
                     "probe dice": foreground_dice(linear_probe(d["x"], d["y"], n_classes), d["y"]),
                     "input mean, foreground": [round(float(v), 2) for v in fg],
                     "input mean, background": [round(float(v), 2) for v in bg],
                     "head bias": [round(float(v), 2) for v in net.get_submodule(head).bias]})
    cuts = [dict(fold=str(fold.path), **r) for r in cut_rows(net, cases, probed, n_classes)] if cut else []
    return rows, cuts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fold_dirs", nargs="+")
    ap.add_argument("--checkpoint", default="checkpoint_final.pth")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--cut", action="store_true", help="also halve each head's input unit (see above)")
    args = ap.parse_args()
    torch.set_num_threads(1)   # beside a study: one core
    done = [probe_fold(f, args.checkpoint, args.cut) for f in args.fold_dirs]
    rows, cuts = [r for d in done for r in d[0]], [r for d in done for r in d[1]]
    print(markdown_table([{"fold": f"{Path(r['fold']).parent.name.split('__')[0]} {Path(r['fold']).name}",
                           "output": r["output"], "inputs": r["inputs"], "head Dice": f"{r['head dice']:.3f}",
                           "linear probe Dice": f"{r['probe dice']:.3f}",
                           **{k: r[k] for k in ("input mean, foreground", "input mean, background", "head bias")}}
                          for r in rows]))
    if cuts:
        print()
        print(markdown_table([{"fold": f"{Path(r['fold']).parent.name.split('__')[0]} {Path(r['fold']).name}",
                               **{k: f"{v:.3f}" if isinstance(v, float) else v for k, v in r.items() if k != "fold"}}
                              for r in cuts]))
    if args.json:
        Path(args.json).write_text(json.dumps({"heads": rows, "cuts": cuts}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "head_probe.py"))
