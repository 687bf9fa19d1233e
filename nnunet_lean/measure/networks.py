"""Measure networks side by side in ONE process (same machine state, same threads): parameters,
FLOPs of one forward pass at the plan's patch size (torch's own FlopCounterMode), peak memory and
median time of one training step (nnU-Net's loss with deep supervision, SGD), and the median
time of nnU-Net's sliding-window prediction of one case of the plan's median image size.
"""
from __future__ import annotations

import functools
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nnunet_lean.precision import autocast_training_forward

STEP_REPEATS, PREDICT_REPEATS = 7, 3  # timed turns per candidate (the report's defaults)


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


def peak_tensor_mb(fn: Callable[[], None], device: torch.device) -> float:
    """Peak of the memory held by live tensors while ``fn`` runs (parameters, gradients, optimizer
    state, activations, temporaries). CUDA: the allocator's peak. CPU: the peak of torch's profiler
    memory timeline, which records every tensor allocation and free (the process's resident size
    would add the allocator's and oneDNN's caches and hide what the network itself needs)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        fn()
    live = peak = 0
    for _, action, _, size in sorted(prof._memory_profile().timeline, key=lambda r: r[0]):
        if action in (Action.PREEXISTING, Action.CREATE):
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak / 2 ** 20


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


def train_step(net: nn.Module, loss: nn.Module, patch: List[int], batch: int, in_ch: int, num_classes: int,
               device: torch.device, memory_format: torch.memory_format = torch.contiguous_format
               ) -> Callable[[], None]:
    """One SGD step of nnU-Net's loss on a fixed random batch, warmed up once (allocator, threads,
    optimizer state)."""
    net.train()
    net.to(memory_format=memory_format)
    opt = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_ch, *patch, generator=rng).to(device, memory_format=memory_format)
    targets = ds_targets(net(x), num_classes, rng)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss(net(x), targets).backward()
        opt.step()

    step()
    return step


def round_robin_seconds(calls: Sequence[Callable[[], object]], repeats: int,
                        device: torch.device) -> List[float]:
    """Median seconds of each call, timed in turns (a, b, c, a, b, c, ...): a drift of the machine
    (frequency, other load, heap growth) then reaches every candidate alike, not the first one."""
    times: List[List[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for i, call in enumerate(calls):
            _sync(device)
            t = time.perf_counter()
            call()
            _sync(device)
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def measure(candidates: Sequence[Tuple[str, Callable[[bool], nn.Module]]], loss: nn.Module,
            predictor_factory: Callable[[nn.Module], object], patch: List[int], batch: int,
            case_shape: List[int], in_ch: int, num_classes: int, device: torch.device,
            step_repeats: int = STEP_REPEATS, predict_repeats: int = PREDICT_REPEATS,
            cpu_bf16: bool = False) -> List[Measurement]:
    """Measure (label, ``build(deep_supervision)``) candidates; ``build`` returns the network with its
    weights loaded, if any. Times are taken in turns across the candidates. ``cpu_bf16``: training steps
    under bf16 autocast (nnunet_lean.precision, as the studies train on a CPU); predictions stay fp32."""
    static, steps, predicts = [], [], []
    image = torch.randn(in_ch, *case_shape, generator=torch.Generator().manual_seed(1))
    for label, build in candidates:
        torch.manual_seed(0)
        net = build(True).to(device)
        gflops, full_res_share = forward_gflops(net, patch, in_ch, device)
        if cpu_bf16:
            autocast_training_forward(net)
        step = train_step(net, loss, patch, batch, in_ch, num_classes, device)
        static.append((label, sum(p.numel() for p in net.parameters()), gflops, peak_tensor_mb(step, device),
                       full_res_share))
        steps.append(step)
        predictor = predictor_factory(build(False).to(device))
        predict = functools.partial(predictor.predict_sliding_window_return_logits, image)
        predict()  # warm-up
        predicts.append(predict)
    step_s = round_robin_seconds(steps, step_repeats, device)
    del steps
    predict_s = round_robin_seconds(predicts, predict_repeats, device)
    return [Measurement(label, params, gflops, peak, s, p, share)
            for (label, params, gflops, peak, share), s, p in zip(static, step_s, predict_s)]
