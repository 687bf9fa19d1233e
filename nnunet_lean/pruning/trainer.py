"""nnU-Net trainers that prune channels while training (STAMP and the LUnet paper's baselines).

Schedule: train normally until ``prune_start_epoch``; then, every ``prune_every`` epochs, at the
START of the epoch (after nnU-Net logged its start timestamp, so the step's time counts in that
epoch's logged duration), rank the conv units' channels on ``importance_batches`` training batches,
remove ``prune_channels_per_step`` channels, recompute targeted-dropout probabilities, rebuild the
optimizer (the poly LR continues from the current epoch), and recover until the next step. Stop
pruning when the remaining channel or parameter fraction reaches its target, or at
``prune_stop_epoch``.

Pruning at the start of an epoch means every checkpoint nnU-Net saves at an epoch's end holds the
network that was trained and validated in that epoch. checkpoint_best is "the best EMA pseudo-Dice
of the current widths": each prune step forgets the best EMA, so after the last step
checkpoint_best holds the final architecture at its best validated epoch.

Every checkpoint carries the pruning state (history, dropout probabilities, RNG) under one extra
key (:data:`nnunet_lean.pruning.state.CHECKPOINT_KEY`), so a copied checkpoint resumes on its own;
widths come back from its weights.
"""
from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from typing import Dict, Iterator, Optional

import numpy as np
import torch
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel as DDP
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lean import architecture, runs
from nnunet_lean.jsonio import write_json_atomically
from nnunet_lean.recipe import LeanRecipe, NnunetRecipe
from nnunet_lean.training import QuickSchedule, ScheduleOverrides
from nnunet_lean.pruning import coupling, heads, ranking, state
from nnunet_lean.pruning.distributed import all_reduce_importance, decide_on_rank0
from nnunet_lean.pruning.network import PrunableUNet
from nnunet_lean.pruning.plots import plot_history
from nnunet_lean.pruning.state import HISTORY_FILE, PLOT_FILE  # noqa: F401  (re-exported: stored import path)

PRUNABLE_CLASS = f"{PrunableUNet.__module__}.{PrunableUNet.__name__}"
REFIT_CHOICES = (None, "cut", "all")
PLAIN_UNETS = ("dynamic_network_architectures.architectures.unet.PlainConvUNet", PRUNABLE_CLASS)


def prunable_architecture(arch: dict) -> dict:
    """The plan's PlainConvUNet as a PrunableUNet; any other network is refused in one line."""
    if arch["network_class_name"] not in PLAIN_UNETS:
        raise RuntimeError(
            f"channel pruning needs a PlainConvUNet plan, got {arch['network_class_name'].split('.')[-1]}: "
            "train on nnUNetPlans / nnUNetLeanPlans (ResidualEncoderUNet plans are not supported)")
    out = dict(arch)
    out["network_class_name"] = PRUNABLE_CLASS
    return out


def _dice(d: Optional[float]) -> str:
    return "n/a" if d is None else f"{d:.4f}"


class _TorchWithExtraSave:
    """Stands in for ``torch`` inside nnU-Net's trainer module: ``save`` adds ``extra`` to the dict."""

    def __init__(self, real, extra: dict):
        self.torch, self.extra, self.saved = real, extra, False

    def __getattr__(self, name: str):
        return getattr(self.torch, name)

    def save(self, obj, f, *args, **kwargs):
        self.saved = True
        return self.torch.save({**obj, **self.extra}, f, *args, **kwargs)


@contextlib.contextmanager
def _extra_checkpoint_keys(extra: dict) -> Iterator[_TorchWithExtraSave]:
    """nnUNetTrainer.save_checkpoint builds its dict and passes it to ``torch.save`` in one function,
    with no hook. To store one more key without copying that function, and without writing the
    (large) file twice (save, load, save again), the ``torch`` name of nnU-Net's trainer module is
    swapped for this one call. ``proxy.saved`` tells whether nnU-Net's save went through it."""
    module = sys.modules[nnUNetTrainer.__module__]
    proxy = _TorchWithExtraSave(module.torch, extra)
    module.torch = proxy
    try:
        yield proxy
    finally:
        module.torch = proxy.torch


class nnUNetTrainerSTAMP(LeanRecipe, nnUNetTrainer):
    """STAMP (Dinsdale et al. 2022): prune the channel with the lowest layer-normalised L2 norm of its
    raw conv output; targeted channel dropout from the ranking. Defaults sized for nnU-Net's 1000 epochs.
    The lean recipe (Adam, as STAMP's reference also trains; a fresh optimizer after each step)."""

    prune_strategy = "stamp"            # or "random_stamp_block", "random_widest"
    importance_point = "conv"           # STAMP's reference: raw conv output, train mode; or "activation"
    prune_start_epoch = 100
    prune_every = 2                     # recovery epochs between pruning steps
    prune_channels_per_step = 8
    prune_target_channel_fraction: Optional[float] = 0.25   # stop when this fraction remains
    prune_target_param_fraction: Optional[float] = None
    prune_stop_epoch: Optional[int] = None   # None: until the target, leaving >= prune_every recovery epochs
    prune_min_channels = 2              # no unit goes below this width (1: STAMP's reference; docs/learning.md)
    prune_min_channels_full_resolution: Optional[int] = 4   # a higher floor for the units at full resolution
                                        # (encoder stage 0, last decoder stage; None: prune_min_channels)
    prune_min_channels_head_inputs: Optional[int] = 4       # a higher floor for every unit that feeds a
                                        # segmentation head (the last unit of each decoder stage; None: not raised)
    prune_refit_heads: Optional[str] = "all"  # after each step refit segmentation heads to the labels of
                                        # importance_batches training batches where that reads them better: "all"
                                        # every head, "cut" those whose input unit lost channels, None none
                                        # (nnunet_lean.pruning.heads; docs/learning.md "The fix: refit the heads")
    prune_keep_optimizer_state = False  # True: Adam's moments survive a step, cut like the weights (the
                                        # reference starts a fresh optimizer)
    prune_probe_batches = 0             # > 0: Dice on these validation batches right before and after each cut
    importance_batches = 10
    dropout_p_max = 0.1
    dropout_p_init = 0.005
    prune_seed = 12345                  # the fold is added: folds prune differently

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        arch = prunable_architecture(architecture.from_configuration(configuration_manager))
        return architecture.build(arch, num_input_channels, num_output_channels,
                                  deep_supervision=enable_deep_supervision)

    # --- plumbing ----------------------------------------------------------------------------
    def raw_network(self) -> PrunableUNet:
        net = self.network.module if self.is_ddp else self.network
        return net._orig_mod if isinstance(net, OptimizedModule) else net

    def rebuild_after_surgery(self) -> None:
        """New parameter tensors: recompile, new optimizer at the current poly LR, new DDP wrapper."""
        net = self.raw_network()
        self.network = torch.compile(net) if self._do_i_compile() else net
        self.optimizer, self.lr_scheduler = self.configure_optimizers()
        self.lr_scheduler.step(self.current_epoch)
        if self.is_ddp:  # device_ids only for a CUDA module (DDP refuses them on CPU)
            on_cuda = next(net.parameters()).device.type == "cuda"
            self.network = DDP(self.network, device_ids=[self.local_rank] if on_cuda else None)

    @property
    def pruning_state(self) -> dict:
        return self.raw_network().pruning_state

    def fold_seed(self) -> int:
        """prune_seed + fold; fold 'all' (a string in nnU-Net) gets prune_seed - 1, unlike any numbered fold."""
        return self.prune_seed + (self.fold if isinstance(self.fold, int) else -1)

    def initialize(self):
        if self.prune_refit_heads not in REFIT_CHOICES:
            raise RuntimeError(f"prune_refit_heads = {self.prune_refit_heads!r}: set it to one of "
                               + ", ".join(map(repr, REFIT_CHOICES)))
        super().initialize()
        net = self.raw_network()
        if not net.pruning_state:
            widths = net.widths()
            net.pruning_state = {
                "strategy": self.prune_strategy, "importance_point": self.importance_point,
                "initial_widths": widths, "initial_params": net.num_parameters(), "steps": [], "done": False,
                "dropout": {n: self.dropout_p_init for n in widths},
                "rng": np.random.default_rng(self.fold_seed()).bit_generator.state,
            }
        net.set_dropout(net.pruning_state["dropout"])

    def save_checkpoint(self, filename: str) -> None:
        with _extra_checkpoint_keys({state.CHECKPOINT_KEY: copy.deepcopy(self.pruning_state)}) as proxy:
            super().save_checkpoint(filename)
        if self.local_rank == 0 and not self.disable_checkpointing and not proxy.saved:
            raise RuntimeError("nnU-Net's save_checkpoint no longer calls torch.save, so the pruning state was "
                               "not stored: install the nnunetv2 version setup.py names")

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """Reshape to the checkpoint's widths and restore the pruning state before nnU-Net loads
        weights AND optimizer state (the optimizer must be built on the reshaped parameters)."""
        if not self.was_initialized:
            self.initialize()
        path = filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else None
        # read here and again by nnU-Net: 2.8.1's load_checkpoint takes a dict by its signature but works
        # only with a path, and the network must be reshaped before nnU-Net loads the optimizer state
        checkpoint = runs.load_checkpoint(path) if path else filename_or_checkpoint
        restored = state.from_checkpoint(checkpoint, path)
        if restored is None:
            raise RuntimeError(f"{path or 'the checkpoint'} holds no pruning state: --c resumes only checkpoints "
                               "of a pruning trainer (start from other weights with -pretrained_weights)")
        weights = checkpoint["network_weights"]
        net = self.raw_network()
        net.reshape_to(weights, "module." if any(k.startswith("module.") for k in weights) else "")
        net.pruning_state = restored
        net.set_dropout(restored["dropout"])
        self.rebuild_after_surgery()
        super().load_checkpoint(filename_or_checkpoint)  # positional: renamed after nnunetv2 2.8.1

    # --- schedule ------------------------------------------------------------------------------
    def fractions_left(self) -> Dict[str, float]:
        net, st = self.raw_network(), self.pruning_state
        return {"channels": sum(net.widths().values()) / sum(st["initial_widths"].values()),
                "params": net.num_parameters() / st["initial_params"]}

    def target_reached(self) -> bool:
        left = self.fractions_left()
        return ((self.prune_target_channel_fraction is not None
                 and left["channels"] <= self.prune_target_channel_fraction)
                or (self.prune_target_param_fraction is not None
                    and left["params"] <= self.prune_target_param_fraction))

    def should_prune(self, epoch: int) -> bool:
        """Whether a step opens ``epoch``: from prune_start_epoch, every prune_every epochs, leaving
        epochs epoch .. num_epochs-1 (at least prune_every of them) to recover."""
        stop = self.num_epochs - self.prune_every + 1
        if self.prune_stop_epoch is not None:
            stop = min(stop, self.prune_stop_epoch)
        return (not self.pruning_state["done"] and self.prune_start_epoch <= epoch < stop
                and (epoch - self.prune_start_epoch) % self.prune_every == 0)

    def on_epoch_start(self):
        super().on_epoch_start()  # logs the epoch's start timestamp: the step's time counts in this epoch
        if self.should_prune(self.current_epoch):
            if self.target_reached():
                self.pruning_state["done"] = True
            else:
                self.prune_step()

    # --- one pruning step -----------------------------------------------------------------------
    def measure_importance(self) -> ranking.Importance:
        """Per-unit channel norms over ``importance_batches`` training batches, all-reduced over ranks.
        At the "conv" point in train mode, as STAMP's reference does (its full pass over the training
        data is ``importance_batches`` = cases / batch size); at "activation" in eval mode."""
        net = self.raw_network()
        was_training = net.training
        net.train(self.importance_point == "conv")
        with torch.no_grad(), ranking.ChannelNorms(net, self.importance_point) as rec:
            for _ in range(self.importance_batches):
                net(next(self.dataloader_train)["data"].to(self.device, non_blocking=True))
        net.train(was_training)
        return all_reduce_importance(rec.sums)

    def unit_floors(self) -> Dict[str, int]:
        """Each unit's floor: prune_min_channels, raised to prune_min_channels_full_resolution at full resolution
        (encoder stage 0 and the last decoder stage: nnU-Net's first stage never downsamples) and to
        prune_min_channels_head_inputs where the unit feeds a segmentation head (None: not raised)."""
        units = list(self.raw_network().units.values())
        full = set(coupling.full_resolution_units(units))
        floors = {}
        for u in units:
            raised = [self.prune_min_channels]
            if u.name in full:
                raised.append(self.prune_min_channels_full_resolution)
            if coupling.head_path(u) is not None:
                raised.append(self.prune_min_channels_head_inputs)
            floors[u.name] = max(f for f in raised if f is not None)
        return floors

    def prune_step(self) -> None:
        start = time.perf_counter()
        net, st = self.raw_network(), self.pruning_state
        scores = ranking.normalise(self.measure_importance())
        widths = net.widths()
        rng = np.random.default_rng()
        rng.bit_generator.state = st["rng"]
        picks = decide_on_rank0(lambda: ranking.choose(self.prune_strategy, scores, widths,
                                                       self.prune_channels_per_step, rng,
                                                       self.unit_floors()))
        st["rng"] = rng.bit_generator.state
        probe = [next(self.dataloader_val) for _ in range(self.prune_probe_batches)]
        before = self.probe_dice(probe)
        old_state = self.optimizer.state
        net.surgery_log = [] if self.prune_keep_optimizer_state else None
        net.remove_picks(picks)
        refits = self.refit_heads(picks) if self.prune_refit_heads is not None else None
        st["dropout"] = ranking.dropout_probabilities(ranking.without(scores, picks), self.dropout_p_max)
        net.set_dropout(st["dropout"])
        self.rebuild_after_surgery()
        if net.surgery_log is not None:
            self.optimizer.state.update(net.carry_state(old_state))
            net.surgery_log = None
            for h in (h for h, r in (refits or {}).items() if r["refit"]):   # moments of the weights it replaced
                for p in net.get_submodule(h).parameters():
                    self.optimizer.state.pop(p, None)
        self._best_ema = None  # "best" is among epochs at the current widths
        left = self.fractions_left()
        dice_log = self.logger.get_value("mean_fg_dice", step=None)
        dice = float(dice_log[-1]) if dice_log else None  # the previous epoch's, before this step
        record = {"step": len(st["steps"]) + 1, "epoch": self.current_epoch, "picks": [list(p) for p in picks],
                  "channels_left": sum(net.widths().values()), "channel_fraction": round(left["channels"], 5),
                  "params": net.num_parameters(), "pseudo_dice": dice,
                  "seconds": round(time.perf_counter() - start, 4), "widths": net.widths()}
        if refits is not None:
            record["head_refits"] = refits
        if probe:
            record.update(probe_dice_before_cut=before, probe_dice_after_cut=self.probe_dice(probe))
        st["steps"].append(record)
        what = ", ".join(f"{n}:{c}" for n, c in picks)
        self.print_to_log_file(
            f"prune step {record['step']} (start of epoch {self.current_epoch}, {self.prune_strategy}, "
            f"{self.importance_point}): removed {what}; {record['channels_left']} channels left "
            f"({100 * left['channels']:.1f} %), {record['params']:,} params, previous pseudo-Dice "
            + _dice(dice))
        self.write_history()

    def refit_heads(self, picks) -> Dict[str, dict]:
        """Refit every segmentation head ("all"), or those whose input unit lost channels in ``picks`` ("cut"), on
        ``importance_batches`` fresh training batches (:func:`heads.refit_heads`). Per head: the Dice of the cut head
        and of the refit on those batches, and whether the refit replaced it."""
        net, lm = self.raw_network(), self.label_manager
        units = [net.units[n] for n, _ in picks] if self.prune_refit_heads == "cut" else net.units.values()
        names = sorted({coupling.head_path(u) for u in units} - {None})
        step = len(self.pruning_state["steps"]) + 1
        out = heads.refit_heads(net, names, lambda n: (next(self.dataloader_train) for _ in range(n)),
                                self.importance_batches, lm.has_regions, lm.ignore_label,
                                seed=self.fold_seed() + step - 1)
        for h, r in out.items():
            self.print_to_log_file(f"prune step {step}, head {h}: Dice after the cut {_dice(r['dice_cut'])}, refit "
                                   f"{_dice(r['dice_refit'])}" + (" (kept)" if r["refit"] else " (not kept)"))
        return out

    def probe_dice(self, batches: list) -> Optional[float]:
        """Foreground Dice of the full-resolution output on ``batches`` (validation batches, nnU-Net's own
        validation_step, eval mode), pooled over the batches as nnU-Net pools its pseudo-Dice; None without
        batches."""
        if not batches:
            return None
        self.network.eval()
        with torch.no_grad():
            outs = [self.validation_step(b) for b in batches]
        self.network.train()
        tp, fp, fn = (np.sum([o[k] for o in outs], axis=0) for k in ("tp_hard", "fp_hard", "fn_hard"))
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.nanmean(2 * tp / (2 * tp + fp + fn)))

    def write_history(self) -> None:
        if self.local_rank == 0:
            write_json_atomically(state.history_of(self.pruning_state),
                                  os.path.join(self.output_folder, HISTORY_FILE), indent=1)

    def on_train_end(self):
        super().on_train_end()  # removes checkpoint_latest.pth: a legacy sidecar of it goes too
        if self.local_rank == 0:
            legacy = os.path.join(self.output_folder, "checkpoint_latest.pth" + state.LEGACY_SUFFIX)
            if os.path.isfile(legacy):
                os.remove(legacy)
            self.write_history()
            plot_history(self.pruning_state, os.path.join(self.output_folder, PLOT_FILE))


class nnUNetTrainerSTAMPActivation(nnUNetTrainerSTAMP):
    """STAMP ranked after norm and nonlinearity, in eval mode (this project's first measuring point)."""
    importance_point = "activation"


class nnUNetTrainerPruneRandomInSTAMPBlock(nnUNetTrainerSTAMP):
    """Baseline: STAMP picks the block, a random channel of it is removed."""
    prune_strategy = "random_stamp_block"


class nnUNetTrainerPruneRandomWidest(nnUNetTrainerSTAMP):
    """Baseline: a random channel of the currently widest conv (ties at random)."""
    prune_strategy = "random_widest"


# the same pruning under nnU-Net's own recipe (SGD), as before the lean recipe existed
class nnUNetTrainerSTAMPSGD(NnunetRecipe, nnUNetTrainerSTAMP):
    pass


class nnUNetTrainerSTAMPActivationSGD(NnunetRecipe, nnUNetTrainerSTAMPActivation):
    pass


class nnUNetTrainerPruneRandomInSTAMPBlockSGD(NnunetRecipe, nnUNetTrainerPruneRandomInSTAMPBlock):
    pass


class nnUNetTrainerPruneRandomWidestSGD(NnunetRecipe, nnUNetTrainerPruneRandomWidest):
    pass


class QuickPruning(ScheduleOverrides):
    """A CPU-sized pruning schedule: 12 epochs x 20 iterations, 16 channels at the start of epochs 2..9."""
    schedule = dict(QuickSchedule.schedule, prune_start_epoch=2, prune_every=1, prune_stop_epoch=10,
                    prune_channels_per_step=16, importance_batches=4)


class nnUNetTrainerSTAMPQuick(QuickPruning, nnUNetTrainerSTAMP):
    pass


class nnUNetTrainerPruneRandomInSTAMPBlockQuick(QuickPruning, nnUNetTrainerPruneRandomInSTAMPBlock):
    pass


class nnUNetTrainerPruneRandomWidestQuick(QuickPruning, nnUNetTrainerPruneRandomWidest):
    pass


class nnUNetTrainerSTAMPActivationQuick(QuickPruning, nnUNetTrainerSTAMPActivation):
    pass
