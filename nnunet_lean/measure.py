"""Measure networks side by side in ONE process (same machine state, same threads): parameters,
FLOPs of one forward pass at the plan's patch size (torch's own FlopCounterMode), peak memory and
median time of one training step (nnU-Net's loss with deep supervision, SGD), and the median
time of nnU-Net's sliding-window prediction of one case of the plan's median image size.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Measurement:
    label: str
    parameters: int
    gflops_forward: float
    train_step_peak_mb: float
    train_step_s: float
    predict_case_s: float
    full_res_flops_share: float

    def as_row(self, base: "Measurement") -> Dict[str, object]:
        return {
            "network": self.label, "parameters": f"{self.parameters:,}",
            "GFLOPs fwd": f"{self.gflops_forward:.2f}", "train step peak MB": f"{self.train_step_peak_mb:.0f}",
            "train step s": f"{self.train_step_s:.3f}", "predict case s": f"{self.predict_case_s:.2f}",
            "params ratio": f"{self.parameters / base.parameters:.3f}",
            "FLOPs ratio": f"{self.gflops_forward / base.gflops_forward:.3f}",
            "memory ratio": f"{self.train_step_peak_mb / base.train_step_peak_mb:.2f}",
            "step ratio": f"{self.train_step_s / base.train_step_s:.2f}",
            "predict ratio": f"{self.predict_case_s / base.predict_case_s:.2f}",
            "full-res FLOPs share": f"{self.full_res_flops_share:.2f}",
        }

    def as_json(self, base: "Measurement") -> dict:
        d = asdict(self)
        for k in ("parameters", "gflops_forward", "train_step_peak_mb", "train_step_s", "predict_case_s"):
            d[f"{k}_ratio"] = d[k] / getattr(base, k)
        return d


@functools.lru_cache(maxsize=1)
def _return_freed_memory_to_the_os() -> None:
    """glibc keeps freed heap memory for reuse, which would hide a step's activations from the
    resident-size high-water mark: serve every allocation of 64 KiB or more by mmap (unmapped
    on free), with a fixed threshold."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a block: CUDA's allocator peak, or on CPU the process's resident high-water
    mark (VmHWM, reset through /proc/self/clear_refs) above the resident size before the block."""

    def __init__(self, device: torch.device):
        self.device, self.mb = device, float("nan")

    @staticmethod
    def _status_kb(field: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            _return_freed_memory_to_the_os()
            gc.collect()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self._base = self._status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = self._status_kb("VmHWM") * 1024
        self.mb = (peak - self._base) / 2 ** 20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_gflops(net: nn.Module, patch: List[int], in_ch: int, device: torch.device) -> tuple:
    """Total GFLOPs of one forward pass, and the share of the full-resolution blocks (first encoder
    stage + last decoder stage): LUnet keeps those at the plan's base width, so they bound its gain."""
    net.eval()
    x = torch.zeros(1, in_ch, *patch, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    total = counter.get_total_flops()
    counts = counter.get_flop_counts()
    last_dec = len(getattr(net.decoder, "stages", [])) - 1
    full_res = sum(sum(ops.values()) for name, ops in counts.items()
                   if name.endswith("encoder.stages.0") or name.endswith(f"decoder.stages.{last_dec}"))
    return total / 1e9, full_res / max(total, 1)


def ds_targets(outputs, num_classes: int, rng: torch.Generator) -> list:
    """Random label maps at each deep-supervision output's resolution."""
    return [torch.randint(0, num_classes, (o.shape[0], 1, *o.shape[2:]), generator=rng).to(o.device, torch.float32)
            for o in outputs]


def train_step_stats(net: nn.Module, loss: nn.Module, patch: List[int], batch: int, in_ch: int,
                     num_classes: int, device: torch.device, repeats: int) -> tuple:
    if device.type == "cpu":
        _return_freed_memory_to_the_os()
    net.train()
    opt = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_ch, *patch, generator=rng).to(device)
    targets = ds_targets(net(x), num_classes, rng)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = net(x)
        loss(out, targets).backward()
        opt.step()

    step()  # warm-up: allocator, threads, optimizer state
    with PeakMemory(device) as mem:
        step()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return mem.mb, statistics.median(times)


def predict_case_s(predictor_factory: Callable[[nn.Module], object], net: nn.Module, case_shape: List[int],
                   in_ch: int, repeats: int) -> float:
    predictor = predictor_factory(net)
    image = torch.randn(in_ch, *case_shape, generator=torch.Generator().manual_seed(1))
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        predictor.predict_sliding_window_return_logits(image)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])  # the first call warms up


def measure(label: str, build: Callable[[bool], nn.Module], loss: nn.Module,
            predictor_factory: Callable[[nn.Module], object], patch: List[int], batch: int,
            case_shape: List[int], in_ch: int, num_classes: int, device: torch.device,
            step_repeats: int = 5, predict_repeats: int = 2) -> Measurement:
    """``build(deep_supervision)`` returns the network (weights loaded if any)."""
    torch.manual_seed(0)
    net = build(True).to(device)
    params = sum(p.numel() for p in net.parameters())
    gflops, full_res_share = forward_gflops(net, patch, in_ch, device)
    peak, step_s = train_step_stats(net, loss, patch, batch, in_ch, num_classes, device, step_repeats)
    del net
    pred_net = build(False).to(device)
    pred_s = predict_case_s(predictor_factory, pred_net, case_shape, in_ch, predict_repeats)
    return Measurement(label, params, gflops, peak, step_s, pred_s, full_res_share)
