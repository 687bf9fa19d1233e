"""Diagnostic trainers for the learning study (scripts/learning_probe.py, docs/learning.md).

``LearningProbe`` adds, without changing training, one JSON line per epoch to FOLD/probe.jsonl:
- gradient L2 norm per network part (encoder stages, decoder stages, segmentation heads), mean over
  the epoch's steps, read in an optimizer step pre-hook (after nnU-Net's clipping);
- on one fixed validation batch (eval mode): per deep-supervision output, the mean foreground
  probability on foreground and on background voxels and the predicted foreground fraction; per
  decoder stage, the median over channels of the raw conv output's spatial std, the number of
  channels whose post-nonlinearity output is constant (std < 1e-4), and the mean |gamma| of its norms.

Budget: NNUNET_LEAN_BUDGET_EPOCHS x NNUNET_LEAN_BUDGET_ITERS (like the study's budget trainers).
Recipes: nnU-Net's SGD (lr 1e-2, Nesterov 0.99, poly) or nnU-Net's own nnUNetTrainerVanillaAdam
(Adam, lr 1e-2, poly), nothing else changed.
"""
import json
import os
import re
from collections import defaultdict

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerVanillaAdam

from nnunet_lean_bench_trainers import BudgetSchedule  # the sibling module (nnUNet_extTrainer's folder)


def _part(name: str) -> str:
    """Parameter name -> network part: enc0.., dec0.. (deepest first), head0.., up0.."""
    for pattern, label in ((r"^encoder\.stages\.(\d+)\.", "enc"), (r"^decoder\.stages\.(\d+)\.", "dec"),
                           (r"^decoder\.seg_layers\.(\d+)\.", "head"), (r"^decoder\.transpconvs\.(\d+)\.", "up")):
        m = re.match(pattern, name)
        if m:
            return f"{label}{m.group(1)}"
    return "other"


class LearningProbe(BudgetSchedule):
    """The studies' budget (scripts/learning_probe.py sets it) plus the per-epoch record."""

    def configure_optimizers(self):
        optimizer, scheduler = super().configure_optimizers()
        self._grad_sums, self._grad_steps = defaultdict(float), 0

        def pre_step(opt, *_):
            net = self.network._orig_mod if hasattr(self.network, "_orig_mod") else self.network
            sq = defaultdict(float)
            for name, p in net.named_parameters():
                if p.grad is not None and not name.startswith("decoder.encoder."):
                    sq[_part(name)] += float(p.grad.detach().float().pow(2).sum())
            for k, v in sq.items():
                self._grad_sums[k] += v ** 0.5
            self._grad_steps += 1
        optimizer.register_step_pre_hook(pre_step)
        return optimizer, scheduler

    def on_train_start(self):
        super().on_train_start()
        self._probe_batch = next(self.dataloader_val)

    @torch.no_grad()
    def _probe(self) -> dict:
        net = self.network._orig_mod if hasattr(self.network, "_orig_mod") else self.network
        net.eval()
        stats, handles = {}, []
        for i, stage in enumerate(net.decoder.stages):
            for j, block in enumerate(stage.convs):
                def hook_conv(_m, _i, out, key=f"dec{i}.{j}"):
                    stats.setdefault(key, {})["conv_std_median"] = float(
                        out.float().flatten(2).std(dim=2).median())

                def hook_act(_m, _i, out, key=f"dec{i}.{j}"):
                    stds = out.float().flatten(2).std(dim=2).amax(0)  # over the batch: constant in every case
                    stats.setdefault(key, {})["constant_channels"] = int((stds < 1e-4).sum())
                    stats[key]["channels"] = int(out.shape[1])
                handles.append(block.conv.register_forward_hook(hook_conv))
                handles.append(block.nonlin.register_forward_hook(hook_act))
                if getattr(block, "norm", None) is not None and block.norm.weight is not None:
                    stats.setdefault(f"dec{i}.{j}", {})["gamma_abs_mean"] = float(block.norm.weight.abs().mean())
        data = self._probe_batch["data"].to(self.device)
        targets = self._probe_batch["target"]
        outputs = net(data)
        for h in handles:
            h.remove()
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        targets = targets if isinstance(targets, (list, tuple)) else [targets]
        per_output = []
        for out, tgt in zip(outputs, targets):
            prob = torch.softmax(out.float(), 1)
            fg_prob = 1 - prob[:, 0:1]
            fg = (tgt.to(self.device) > 0).float()
            per_output.append({
                "p_fg_on_fg": float((fg_prob * fg).sum() / fg.sum().clamp_min(1)),
                "p_fg_on_bg": float((fg_prob * (1 - fg)).sum() / (1 - fg).sum().clamp_min(1)),
                "pred_fg_fraction": float((prob.argmax(1, keepdim=True) > 0).float().mean()),
                "target_fg_fraction": float(fg.mean())})
        net.train()
        return {"outputs": per_output, "decoder": stats}

    def on_epoch_end(self):
        record = {"epoch": self.current_epoch, "lr": self.optimizer.param_groups[0]["lr"],
                  "train_loss": float(self.logger.get_value("train_losses", step=-1)),
                  "pseudo_dice": float(self.logger.get_value("mean_fg_dice", step=-1)),
                  "grad_norm": {k: v / max(1, self._grad_steps) for k, v in sorted(self._grad_sums.items())},
                  **self._probe()}
        self._grad_sums, self._grad_steps = defaultdict(float), 0
        if self.local_rank == 0:
            with open(os.path.join(self.output_folder, "probe.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
        super().on_epoch_end()


class nnUNetTrainerProbeSGD(LearningProbe, nnUNetTrainer):
    """nnU-Net's recipe: SGD lr 1e-2, Nesterov momentum 0.99, poly."""


class nnUNetTrainerProbeAdam(LearningProbe, nnUNetTrainerVanillaAdam):
    """nnU-Net's nnUNetTrainerVanillaAdam: Adam lr 1e-2, poly."""
