"""The coupling table of a PlainConvUNet: which tensors change when a conv loses an output channel.

A *unit* is one ConvDropoutNormReLU inside an encoder or decoder block. Removing its output
channel c removes row c of its conv (weight, bias) and of its norm (weight, bias, running stats),
and input channel c of every *consumer*:

* the next conv of the same block (weight dim 1);
* last conv of encoder stage s < last: the first conv of encoder stage s+1 (dim 1) and the first
  decoder conv at that resolution, whose input is cat([upsampled, skip]): dim 1 at offset
  ``transpconv.out_channels + c`` (read from the module at prune time, never assumed);
* last conv of the bottleneck: the first transposed conv (dim 0, ConvTranspose weights are in x out);
* last conv of decoder stage d: its segmentation head (dim 1) and the next transposed conv (dim 0).

Transposed-conv outputs, segmentation-head outputs and the network input are never pruned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class Consumer:
    path: str                      # module whose weight takes the unit's output as input channels
    dim: int                       # 1 for ConvNd, 0 for ConvTransposeNd
    offset_of: Optional[str] = None  # module whose out_channels precede ours in a concatenation


@dataclass(frozen=True)
class Unit:
    name: str                      # "enc2.1": encoder stage 2, conv 1; "dec0.1": decoder stage 0, conv 1
    path: str                      # dotted path of the ConvDropoutNormReLU
    side: str                      # "encoder" or "decoder"
    stage: int
    index: int
    consumers: Tuple[Consumer, ...]


def coupling_table(n_convs_encoder: List[int], n_convs_decoder: List[int]) -> List[Unit]:
    """Units and consumers of a PlainConvUNet with these per-stage conv counts."""
    n_enc, n_dec = len(n_convs_encoder), len(n_convs_decoder)
    if n_dec != n_enc - 1:
        raise ValueError(f"{n_enc} encoder stages need {n_enc - 1} decoder stages, got {n_dec}")

    def enc(s: int, i: int) -> str:
        return f"encoder.stages.{s}.0.convs.{i}"

    def dec(d: int, i: int) -> str:
        return f"decoder.stages.{d}.convs.{i}"

    units: List[Unit] = []
    for s, n in enumerate(n_convs_encoder):
        for i in range(n):
            if i < n - 1:
                cons = [Consumer(enc(s, i + 1) + ".conv", 1)]
            elif s < n_enc - 1:
                d = n_enc - 2 - s  # decoder stage at this resolution
                cons = [Consumer(enc(s + 1, 0) + ".conv", 1),
                        Consumer(dec(d, 0) + ".conv", 1, offset_of=f"decoder.transpconvs.{d}")]
            else:
                cons = [Consumer("decoder.transpconvs.0", 0)]
            units.append(Unit(f"enc{s}.{i}", enc(s, i), "encoder", s, i, tuple(cons)))
    for d, n in enumerate(n_convs_decoder):
        for i in range(n):
            if i < n - 1:
                cons = [Consumer(dec(d, i + 1) + ".conv", 1)]
            else:
                cons = [Consumer(f"decoder.seg_layers.{d}", 1)]
                if d < n_dec - 1:
                    cons.append(Consumer(f"decoder.transpconvs.{d + 1}", 0))
            units.append(Unit(f"dec{d}.{i}", dec(d, i), "decoder", d, i, tuple(cons)))
    return units


def full_resolution_units(units: List[Unit]) -> List[str]:
    """Units at full resolution: encoder stage 0 and the last decoder stage (nnU-Net's first stage never downsamples)."""
    last_dec = max(u.stage for u in units if u.side == "decoder")
    return [u.name for u in units if u.stage == (0 if u.side == "encoder" else last_dec)]


def head_path(unit: Unit) -> Optional[str]:
    """The segmentation head a unit feeds (the last unit of a decoder stage), else None."""
    return next((c.path for c in unit.consumers if c.path.startswith("decoder.seg_layers")), None)
