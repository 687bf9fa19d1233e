"""CPU numerics of training: bf16 autocast around the network's training forward passes, and denormals
flushed to zero.

nnU-Net autocasts (fp16) only on CUDA; on a CPU it trains in fp32. On a CPU with native bf16
(AVX512-BF16 / AMX) bf16 autocast about halves a training step of our 3d networks (docs/learning.md,
`nnunet_lean report --cpu-bf16` against without on airway 64^3, batch 2, 2 threads: default 6.6 -> 3.7 s,
LUnet Nf=32 4.6 -> 2.6 s). The studies use it to fit their trainings into the CPU hours they have.
nnU-Net's training loop stays unchanged because only the network's ``forward`` is wrapped: in training
mode it runs under ``torch.autocast("cpu", torch.bfloat16)`` and hands fp32 outputs to nnU-Net's loss; in
eval mode (validation, nnU-Net's final validation) it is the network's own fp32 forward. The state dict
is untouched (checkpoints and predictions are plain fp32).

Denormals (|x| < 1.2e-38) cost x86 CPUs a microcode assist per operation. Trained with Adam and L2 weight
decay, whole stages of a network can decay towards zero (the default network on airway 48^3: the conv
weights of its 1/8-resolution stage at most 5e-18 after 40 epochs, 99.8 % of them denormal), and then its
epochs on a CPU grow slower as training goes on (62 s -> 133 s by epoch 39; docs/learning.md). NVIDIA GPUs
handle denormals at full speed; on a CPU our trainers flush them to zero (FTZ/DAZ, :func:`flush_denormals`).
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


def require_native_bf16(fix: str) -> None:
    """Raise PrecisionError, naming ``fix``, where this CPU has no native bf16."""
    if not cpu_has_native_bf16():
        raise PrecisionError(f"this CPU has no native bf16 (AVX512-BF16 or AMX): {fix}")


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
    require_native_bf16(f"use fp32 (leave {CPU_BF16_ENV} unset, drop --cpu-bf16)")
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


def flush_denormals() -> bool:
    """Flush denormal floats to zero (FTZ/DAZ) on the CPU for this process. The flag lives per thread and
    torch's OpenMP threads copy it when they are created, so call it before the first parallel torch op.
    Returns whether every thread now flushes (checked with a parallel op over denormals); False where the
    CPU cannot flush or the thread pool already existed."""
    if not torch.set_flush_denormal(True):
        return False
    # the smallest denormal, written as bits (a float conversion would already flush it); 32768: ATen's grain
    probe = torch.ones(4 * 32768 * torch.get_num_threads(), dtype=torch.int32).view(torch.float32)
    return bool(((probe * 1.0) == 0).all())   # a thread that flushes reads and writes it as zero


class FlushDenormals:
    """Trainer mixin: on a CPU, denormals flushed to zero from the trainer's construction on (before
    nnU-Net builds the network, so before torch's thread pool exists); logged."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        flushed = device.type == "cpu" and flush_denormals()
        super().__init__(plans, configuration, fold, dataset_json, device)
        if device.type == "cpu":
            self.print_to_log_file("denormals flushed to zero on the CPU (FTZ/DAZ)" if flushed else
                                   "denormals NOT flushed on every CPU thread: training can slow down as "
                                   "weights decay towards zero (nnunet_lean.precision)")
