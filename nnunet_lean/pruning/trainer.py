"""nnU-Net trainers that prune channels while training (STAMP and the LUnet paper's baselines).

Schedule: train normally until ``prune_start_epoch``; then, every ``prune_every`` epochs,
rank the conv units' channels on ``importance_batches`` training batches, remove
``prune_channels_per_step`` channels, recompute targeted-dropout probabilities, rebuild the
optimizer (the poly LR continues from the current epoch), and recover until the next step. Stop
pruning when the remaining channel or parameter fraction reaches its target, or at
``prune_stop_epoch``. Widths come back from the checkpoint's weights; the rest of what resuming
needs (history, dropout probabilities, RNG) is saved as JSON beside each checkpoint, so nnU-Net's
checkpoint format is untouched. A JSON history and a Fig.-3-style PNG land in the fold folder.
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel as DDP
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lean import architecture
from nnunet_lean.jsonio import write_json_atomically
from nnunet_lean.training import QuickSchedule, ScheduleOverrides
from nnunet_lean.pruning import ranking
from nnunet_lean.pruning.distributed import all_reduce_importance, decide_on_rank0
from nnunet_lean.pruning.network import PrunableUNet

PRUNABLE_CLASS = f"{PrunableUNet.__module__}.{PrunableUNet.__name__}"
PLAIN_UNETS = ("dynamic_network_architectures.architectures.unet.PlainConvUNet", PRUNABLE_CLASS)
HISTORY_FILE = "pruning_history.json"
STATE_SUFFIX = ".pruning.json"  # beside each checkpoint: what resuming needs besides weights
PLOT_FILE = "pruning.png"


def prunable_architecture(arch: dict) -> dict:
    """The plan's PlainConvUNet as a PrunableUNet; any other network is refused in one line."""
    if arch["network_class_name"] not in PLAIN_UNETS:
        raise RuntimeError(
            f"channel pruning needs a PlainConvUNet plan, got {arch['network_class_name'].split('.')[-1]}: "
            "train on nnUNetPlans / nnUNetLeanPlans (ResidualEncoderUNet plans are not supported)")
    out = dict(arch)
    out["network_class_name"] = PRUNABLE_CLASS
    return out


class nnUNetTrainerSTAMP(nnUNetTrainer):
    """STAMP (Dinsdale et al. 2022): prune the channel with the lowest layer-normalised activation
    norm; targeted channel dropout from the ranking. Defaults sized for nnU-Net's 1000 epochs."""

    prune_strategy = "stamp"            # or "random_stamp_block", "random_widest"
    prune_start_epoch = 100
    prune_every = 2                     # recovery epochs between pruning steps
    prune_channels_per_step = 8
    prune_target_channel_fraction: Optional[float] = 0.25   # stop when this fraction remains
    prune_target_param_fraction: Optional[float] = None
    prune_stop_epoch: Optional[int] = None   # None: until the target, leaving >= prune_every recovery epochs
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
        if self.is_ddp:
            self.network = DDP(self.network, device_ids=[self.local_rank])

    @property
    def pruning_state(self) -> dict:
        return self.raw_network().pruning_state

    def initialize(self):
        super().initialize()
        net = self.raw_network()
        if not net.pruning_state:
            widths = net.widths()
            net.pruning_state = {
                "strategy": self.prune_strategy, "initial_widths": widths,
                "initial_params": net.num_parameters(), "steps": [], "done": False,
                "dropout": {n: self.dropout_p_init for n in widths},
                "rng": np.random.default_rng(self.prune_seed + self.fold).bit_generator.state,
            }
        net.set_dropout(net.pruning_state["dropout"])

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        if self.local_rank == 0 and not self.disable_checkpointing:
            write_json_atomically(self.pruning_state, filename + STATE_SUFFIX, indent=1)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """Reshape to the checkpoint's widths and restore the pruning state before nnU-Net loads
        weights AND optimizer state (the optimizer must be built on the reshaped parameters)."""
        if not self.was_initialized:
            self.initialize()
        if isinstance(filename_or_checkpoint, str):
            sidecar = filename_or_checkpoint + STATE_SUFFIX
            if not os.path.isfile(sidecar):
                raise RuntimeError(f"{sidecar} is missing: a pruning run resumes only from checkpoints it wrote")
            # read twice: nnU-Net 2.8.1's load_checkpoint accepts a dict by its signature but only works with a path
            weights = torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False)["network_weights"]
            net = self.raw_network()
            net.reshape_to(weights, "module." if any(k.startswith("module.") for k in weights) else "")
            with open(sidecar) as f:
                net.pruning_state = json.load(f)
            net.set_dropout(net.pruning_state["dropout"])
            self.rebuild_after_surgery()
        super().load_checkpoint(filename_or_checkpoint)

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
        stop = self.num_epochs - self.prune_every
        if self.prune_stop_epoch is not None:
            stop = min(stop, self.prune_stop_epoch)
        return (not self.pruning_state["done"] and self.prune_start_epoch <= epoch < stop
                and (epoch - self.prune_start_epoch) % self.prune_every == 0)

    def on_epoch_end(self):
        if self.should_prune(self.current_epoch):
            if self.target_reached():
                self.pruning_state["done"] = True
            else:
                self.prune_step()
        super().on_epoch_end()

    # --- one pruning step -----------------------------------------------------------------------
    def measure_importance(self) -> ranking.Importance:
        net = self.raw_network()
        was_training = net.training
        net.eval()
        with torch.no_grad(), ranking.ActivationNorms(net) as rec:
            for _ in range(self.importance_batches):
                net(next(self.dataloader_train)["data"].to(self.device, non_blocking=True))
        net.train(was_training)
        return all_reduce_importance(rec.sums)

    def prune_step(self) -> None:
        start = time.perf_counter()
        net, st = self.raw_network(), self.pruning_state
        scores = ranking.normalise(self.measure_importance())
        widths = net.widths()
        rng = np.random.default_rng()
        rng.bit_generator.state = st["rng"]
        picks = decide_on_rank0(lambda: ranking.choose(self.prune_strategy, scores, widths,
                                                       self.prune_channels_per_step, rng))
        st["rng"] = rng.bit_generator.state
        net.remove_picks(picks)
        st["dropout"] = ranking.dropout_probabilities(ranking.without(scores, picks), self.dropout_p_max)
        net.set_dropout(st["dropout"])
        self.rebuild_after_surgery()
        left = self.fractions_left()
        dice = self.logger.get_value("mean_fg_dice", step=-1)
        record = {"step": len(st["steps"]) + 1, "epoch": self.current_epoch, "picks": picks,
                  "channels_left": sum(net.widths().values()), "channel_fraction": round(left["channels"], 5),
                  "params": net.num_parameters(), "pseudo_dice": float(dice),
                  "seconds": round(time.perf_counter() - start, 4), "widths": net.widths()}
        st["steps"].append(record)
        what = ", ".join(f"{n}:{c}" for n, c in picks)
        self.print_to_log_file(
            f"prune step {record['step']} (epoch {self.current_epoch}, {self.prune_strategy}): removed {what}; "
            f"{record['channels_left']} channels left ({100 * left['channels']:.1f} %), "
            f"{record['params']:,} params, pseudo-Dice {dice:.4f}")
        self.write_history()

    def write_history(self) -> None:
        if self.local_rank == 0:
            st = {k: v for k, v in self.pruning_state.items() if k != "rng"}
            write_json_atomically(st, os.path.join(self.output_folder, HISTORY_FILE), indent=1)

    def on_train_end(self):
        super().on_train_end()  # removes checkpoint_latest.pth: its sidecar goes too
        if self.local_rank == 0:
            latest = os.path.join(self.output_folder, "checkpoint_latest.pth" + STATE_SUFFIX)
            if os.path.isfile(latest):
                os.remove(latest)
            self.write_history()
            from nnunet_lean.pruning.plots import plot_history
            plot_history(self.pruning_state, os.path.join(self.output_folder, PLOT_FILE))


class nnUNetTrainerPruneRandomInSTAMPBlock(nnUNetTrainerSTAMP):
    """Baseline: STAMP picks the block, a random channel of it is removed."""
    prune_strategy = "random_stamp_block"


class nnUNetTrainerPruneRandomWidest(nnUNetTrainerSTAMP):
    """Baseline: a random channel of the currently widest conv (ties at random)."""
    prune_strategy = "random_widest"


class QuickPruning(ScheduleOverrides):
    """A CPU-sized pruning schedule: 12 epochs x 20 iterations, 16 channels after epochs 2..9."""
    schedule = dict(QuickSchedule.schedule, prune_start_epoch=2, prune_every=1, prune_stop_epoch=10,
                    prune_channels_per_step=16, importance_batches=4)


class nnUNetTrainerSTAMPQuick(QuickPruning, nnUNetTrainerSTAMP):
    pass


class nnUNetTrainerPruneRandomInSTAMPBlockQuick(QuickPruning, nnUNetTrainerPruneRandomInSTAMPBlock):
    pass


class nnUNetTrainerPruneRandomWidestQuick(QuickPruning, nnUNetTrainerPruneRandomWidest):
    pass
