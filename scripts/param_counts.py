"""Parameter counts of the LUnet paper's configurations and of nnU-Net's 6-stage 3d topology,
and the forward-FLOPs share of the full-resolution blocks.

python scripts/param_counts.py   (prints a markdown table; nothing is trained)
"""
from __future__ import annotations

from nnunet_lean import architecture
from nnunet_lean.tables import markdown_table
from nnunet_lean.widths import doubling, lean, scaled


def main() -> None:
    unet4 = doubling(5, 4, 10 ** 6)
    cases = [
        ("paper Unet100% Nf=4 (5 levels)", unet4, "354K"),
        ("paper Unet75% (linear)", scaled(unet4, 0.75), "-"),
        ("paper Unet50% (linear)", scaled(unet4, 0.5), "-"),
        ("paper Unet25% (linear)", scaled(unet4, 0.25), "-"),
        ("paper LUnet Nf=8", lean(5, 8), "42K"),
        ("paper LUnet Nf=4", lean(5, 4), "10.7K"),
        ("nnU-Net 3d, 6 stages 32..320", doubling(6, 32, 320), ""),
        ("LUnet 3d, 6 stages Nf=32", lean(6, 32), ""),
    ]
    rows = []
    for name, widths, paper in cases:
        rows.append({"network": name, "widths": widths,
                     "parameters": f"{architecture.count_parameters(architecture.unet(widths), 1, 2):,}",
                     "paper": paper})
    print(markdown_table(rows))
    d = architecture.count_parameters(architecture.unet(doubling(6, 32, 320)), 1, 2)
    l32 = architecture.count_parameters(architecture.unet(lean(6, 32)), 1, 2)
    print(f"\nnnU-Net default / LUnet Nf=32 on the 6-stage 3d topology: {d / l32:.1f}x fewer parameters")
    import torch
    from nnunet_lean.measure.networks import forward_gflops
    cpu = torch.device("cpu")
    (gd, share), (gl, _) = (forward_gflops(architecture.build(architecture.unet(w), 1, 2), [32] * 3, 1, cpu)
                            for w in (doubling(5, 32, 320), lean(5, 32)))
    print(f"5-stage 3d at 32^3: full-resolution blocks hold {100 * share:.0f} % of the default's forward FLOPs; "
          f"LUnet Nf=32 needs {gl / gd:.2f}x the default's FLOPs")


if __name__ == "__main__":
    main()
