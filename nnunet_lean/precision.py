"""Mixed precision for training on a CPU: bf16 autocast around the network's training forward passes.

nnU-Net autocasts (fp16) only on CUDA; on a CPU it trains in fp32. On a CPU with native bf16
(AVX512-BF16 / AMX) bf16 autocast about halves a training step of our 3d networks (docs/learning.md,
`nnunet_lean report --cpu-bf16` against without on airway 64^3, batch 2, 2 threads: default 6.6 -> 3.7 s,
LUnet Nf=32 4.6 -> 2.6 s). The studies use it to fit their trainings into the CPU hours they have.
nnU-Net's training loop stays unchanged because only the network's ``forward`` is wrapped: in training
mode it runs under ``torch.autocast("cpu", torch.bfloat16)`` and hands fp32 outputs to nnU-Net's loss; in
eval mode (validation, nnU-Net's final validation) it is the network's own fp32 forward. The state dict
is untouched (checkpoints and predictions are plain fp32).
"""
from __future__ import annotations

import functools

import torch

from nnunet_lean.errors import LeanError

CPU_BF16_ENV = "NNUNET_LEAN_CPU_BF16"   # "1": the studies' budget trainers call autocast_training_forward


class PrecisionError(LeanError):
    """bf16 training asked for where it cannot run fast; the message names the fix."""


def cpu_has_native_bf16() -> bool:
    """oneDNN runs bf16 natively here (without it bf16 autocast is slower than fp32)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _to_fp32(out):
    if isinstance(out, torch.Tensor):
        return out.float()
    if isinstance(out, (list, tuple)):
        return type(out)(_to_fp32(o) for o in out)
    return out


def autocast_training_forward(network: torch.nn.Module) -> torch.nn.Module:
    """Wrap ``network.forward`` (in place, idempotent) so that training-mode calls run under CPU bf16
    autocast and return fp32; eval-mode calls are unchanged. Returns the network."""
    if getattr(network.forward, "_lean_bf16", False):
        return network
    if not cpu_has_native_bf16():
        raise PrecisionError(f"this CPU has no native bf16 (AVX512-BF16 or AMX): use fp32 (leave {CPU_BF16_ENV} "
                             f"unset, drop --cpu-bf16)")
    forward = network.forward

    @functools.wraps(forward)
    def bf16_forward(*args, **kwargs):
        if not network.training:
            return forward(*args, **kwargs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return _to_fp32(forward(*args, **kwargs))

    bf16_forward._lean_bf16 = True
    network.forward = bf16_forward
    return network
