"""Does the lean/default training-step ratio on CPU depend on torch's thread count or on the
memory layout (channels-last)? Both networks are measured in one process, on one plans' setting.

    python scripts/bench_cpu_threads_layout.py -d 991 [-p nnUNetPlans] [-c 3d_fullres] [--repeats 5]

Run it on an otherwise idle machine (nnUNet_preprocessed set, the dataset planned).
"""
from __future__ import annotations

import argparse
import sys

import torch

from nnunet_lean.errors import exit_on_error
from nnunet_lean.measure import networks as measure
from nnunet_lean.measure import report as compare
from nnunet_lean.tables import markdown_table

LAYOUTS = {"contiguous (nnU-Net's)": torch.contiguous_format, "channels-last": torch.channels_last_3d}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-d", required=True)
    ap.add_argument("-p", default="nnUNetPlans")
    ap.add_argument("-c", default="3d_fullres")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    st = compare.setting(args.d, args.c, args.p)
    nets = [(label, cls) for label, cls, _ in compare.candidates(["nnUNetTrainerLean"], [], args.p, args.c)]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for layout, fmt in LAYOUTS.items():
            if len(st.patch) != 3 and fmt is torch.channels_last_3d:
                fmt = torch.channels_last
            steps = []
            for _, cls in nets:
                torch.manual_seed(0)
                steps.append(measure.train_step(st.build(cls, True), st.loss, st.patch, st.batch, st.in_ch,
                                                st.out_ch, torch.device("cpu"), fmt))
            seconds = measure.round_robin_seconds(steps, args.repeats, torch.device("cpu"))
            del steps
            rows.append({"threads": threads, "layout": layout, "default step s": f"{seconds[0]:.2f}",
                         "lean step s": f"{seconds[1]:.2f}", "lean / default": f"{seconds[1] / seconds[0]:.2f}"})
            print(rows[-1], flush=True)
    print(f"\n{st.folder.rsplit('/', 1)[-1]} / {args.p} / {args.c}: patch {st.patch}, batch {st.batch}, "
          f"median of {args.repeats} steps each, the two networks timed in turns\n\n" + markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "bench_cpu_threads_layout.py"))
