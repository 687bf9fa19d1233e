"""The LUnet paper's Fig. 3 for one pruning run: (b) channels left per encoder/decoder block over
the pruning steps, (c) channels per block when 75 / 50 / 25 % of the channels remain."""
from __future__ import annotations

import os
from typing import Dict, List, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nnunet_lean.pruning.network import stage_widths  # noqa: E402
from nnunet_lean.pruning.state import PLOT_FILE  # noqa: E402

FRACTIONS = (1.0, 0.75, 0.5, 0.25)


def block_sums(widths: Mapping[str, int]) -> Dict[str, int]:
    return {b: sum(ws) for b, ws in stage_widths(widths).items()}


def widths_at_fractions(state: dict) -> Dict[float, Dict[str, int]]:
    """For each fraction reached, the block widths at the first step at or below it."""
    total0 = sum(state["initial_widths"].values())
    out = {1.0: block_sums(state["initial_widths"])}
    for f in FRACTIONS[1:]:
        hit = next((s for s in state["steps"] if s["channels_left"] <= f * total0), None)
        if hit is not None:
            out[f] = block_sums(hit["widths"])
    return out


def plot_history(state: dict, path: str) -> str:
    # nnU-Net's progress plot switches seaborn's large-font style on globally: draw with defaults
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        return _plot(state, path)


def _plot(state: dict, path: str) -> str:
    blocks = list(block_sums(state["initial_widths"]))
    series: Dict[str, List[int]] = {b: [v] for b, v in block_sums(state["initial_widths"]).items()}
    for s in state["steps"]:
        for b, v in block_sums(s["widths"]).items():
            series[b].append(v)
    steps = list(range(len(state["steps"]) + 1))

    fig, (ax_b, ax_c) = plt.subplots(1, 2, figsize=(13, 4.8))
    cmap = plt.get_cmap("viridis")
    for i, b in enumerate(blocks):
        style = "-" if b.startswith("enc") else "--"
        ax_b.plot(steps, series[b], style, color=cmap(i / max(1, len(blocks) - 1)), label=b)
    ax_b.set(xlabel="pruning step", ylabel="channels in block", yscale="log",
             title=f"(b) channels left per block ({state.get('strategy', '?')})")
    ax_b.legend(ncol=2, fontsize=7)

    at = widths_at_fractions(state)
    width = 0.8 / len(FRACTIONS)
    for j, f in enumerate(FRACTIONS):
        if f in at:
            ax_c.bar([i + j * width for i in range(len(blocks))], [at[f][b] for b in blocks], width,
                     label=f"{round(100 * f)} % left")
    ax_c.set_xticks([i + 0.4 - width / 2 for i in range(len(blocks))], blocks, rotation=45, fontsize=8)
    ax_c.set(ylabel="channels in block", title="(c) channels per block when 100/75/50/25 % remain")
    ax_c.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fold(fold_dir: str, out: str = None) -> str:
    """Render the plot from a finished (or running) fold folder's pruning history."""
    from nnunet_lean.runs import TrainedFold  # runs reads checkpoints with torch: only this command needs it

    return plot_history(TrainedFold.open(fold_dir).pruning_history(), out or os.path.join(fold_dir, PLOT_FILE))
