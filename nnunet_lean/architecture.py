"""Read and rewrite the ``architecture`` entry of an nnU-Net plans configuration.

A plans configuration stores its network as ``{'network_class_name', 'arch_kwargs',
'_kw_requires_import'}``; both PlainConvUNet and ResidualEncoderUNet take their per-stage
widths from ``arch_kwargs['features_per_stage']``, which is all that a width choice changes.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_lean.widths import WidthChoice, Widths, resolve


def plan_widths(arch: dict) -> Widths:
    """The per-stage widths an architecture entry holds."""
    return [int(w) for w in arch["arch_kwargs"]["features_per_stage"]]


def with_widths(arch: dict, widths: Sequence[int]) -> dict:
    """A copy of ``arch`` with ``features_per_stage`` replaced."""
    n = int(arch["arch_kwargs"]["n_stages"])
    if len(widths) != n:
        raise ValueError(f"{len(widths)} widths given for a {n}-stage network")
    out = copy.deepcopy(arch)
    out["arch_kwargs"]["features_per_stage"] = [int(w) for w in widths]
    return out


def build(arch: dict, num_input_channels: int, num_output_channels: int,
          deep_supervision: bool = True, allow_init: bool = True) -> torch.nn.Module:
    """Instantiate the network an architecture entry describes, as nnU-Net would."""
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"],
                                  arch["_kw_requires_import"], num_input_channels,
                                  num_output_channels, allow_init=allow_init,
                                  deep_supervision=deep_supervision)


def count_parameters(arch: dict, num_input_channels: int, num_output_channels: int) -> int:
    """Parameter count of the network, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        net = build(arch, num_input_channels, num_output_channels, allow_init=False)
    return sum(p.numel() for p in net.parameters())


def width_counter(arch: dict, num_input_channels: int,
                  num_output_channels: int) -> Callable[[Widths], int]:
    """``widths -> parameter count`` for this topology (what a parameter budget needs)."""
    return lambda widths: count_parameters(with_widths(arch, widths), num_input_channels,
                                           num_output_channels)


def apply_choice(arch: dict, choice: WidthChoice, num_input_channels: int,
                 num_output_channels: int) -> dict:
    """``arch`` with its widths replaced according to ``choice``."""
    counter = width_counter(arch, num_input_channels, num_output_channels)
    return with_widths(arch, resolve(choice, plan_widths(arch), counter))


def from_configuration(configuration_manager) -> dict:
    """The architecture entry of an nnU-Net ``ConfigurationManager``."""
    return {
        "network_class_name": configuration_manager.network_arch_class_name,
        "arch_kwargs": dict(configuration_manager.network_arch_init_kwargs),
        "_kw_requires_import": tuple(configuration_manager.network_arch_init_kwargs_req_import),
    }


def unet(widths: Sequence[int], conv_dim: int = 3, network: str = "PlainConvUNet") -> dict:
    """An architecture entry like nnU-Net's planner writes: len(widths) stages, 3-voxel kernels,
    stride 2 from the second stage on, 2 convs per block (PlainConvUNet) or nnU-Net's ResEnc
    block counts (ResidualEncoderUNet). The LUnet paper's networks are ``unet(doubling(5, 4, ...))``
    and ``unet(lean(5, nf))``."""
    n = len(widths)
    kwargs = {
        "n_stages": n, "features_per_stage": [int(w) for w in widths],
        "conv_op": f"torch.nn.modules.conv.Conv{conv_dim}d",
        "kernel_sizes": [[3] * conv_dim] * n, "strides": [[1] * conv_dim] + [[2] * conv_dim] * (n - 1),
        "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{conv_dim}d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    }
    if network == "PlainConvUNet":
        kwargs["n_conv_per_stage"] = [2] * n
    elif network == "ResidualEncoderUNet":
        kwargs["n_blocks_per_stage"] = ([1, 3, 4, 6] + [6] * n)[:n]
        kwargs["n_conv_per_stage_decoder"] = [1] * (n - 1)
    else:
        raise ValueError(f"unknown network {network!r}: PlainConvUNet or ResidualEncoderUNet")
    return {"network_class_name": f"dynamic_network_architectures.architectures.unet.{network}",
            "arch_kwargs": kwargs, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
