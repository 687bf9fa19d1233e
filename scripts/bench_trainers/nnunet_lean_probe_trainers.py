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
(Adam, lr 1e-2, poly), nothing else changed; and single-change variants of SGD that each test one
candidate cause (Dice loss only, prior-initialised heads, a 3x learning rate), plus the LUnet paper's
own recipe (Adam lr 1e-2 without schedule, Dice loss only, channel dropout 0.005).
"""
import json
import os
import re
from collections import defaultdict

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.loss.nnUNetTrainerDiceLoss import nnUNetTrainerDiceLoss
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerVanillaAdam
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

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

    def raw_network(self) -> torch.nn.Module:
        """The network itself, not its torch.compile wrapper."""
        return getattr(self.network, "_orig_mod", self.network)

    def configure_optimizers(self):
        optimizer, scheduler = super().configure_optimizers()
        self._add_probe_hook(optimizer)
        return optimizer, scheduler

    def _add_probe_hook(self, optimizer) -> None:
        self._grad_sums, self._grad_steps = defaultdict(float), 0

        def pre_step(opt, *_):
            net = self.raw_network()
            sq = defaultdict(float)
            for name, p in net.named_parameters():
                if p.grad is not None and not name.startswith("decoder.encoder."):
                    sq[_part(name)] += float(p.grad.detach().float().pow(2).sum())
            for k, v in sq.items():
                self._grad_sums[k] += v ** 0.5
            self._grad_steps += 1
        optimizer.register_step_pre_hook(pre_step)

    def on_train_start(self):
        super().on_train_start()
        self._probe_batch = next(self.dataloader_val)

    @torch.no_grad()
    def _probe(self) -> dict:
        net = self.raw_network()
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


class nnUNetTrainerProbeSGDDice(LearningProbe, nnUNetTrainerDiceLoss):
    """nnU-Net's SGD with Dice loss only (nnU-Net's nnUNetTrainerDiceLoss): is CE on the rare foreground
    what collapses the outputs?"""


class nnUNetTrainerProbeSGDPrior(LearningProbe, nnUNetTrainer):
    """nnU-Net's SGD with every segmentation head's bias set to log(class frequency) of training batches
    (the focal-loss paper's prior init): does a start at the class prior, instead of ~uniform, avoid it?"""

    def on_train_start(self):
        super().on_train_start()
        if self.current_epoch > 0:  # resumed (--c): the checkpoint's heads stay
            return
        counts = None
        for _ in range(10):
            target = next(self.dataloader_train)["target"]
            target = target[0] if isinstance(target, (list, tuple)) else target
            c = torch.bincount(target.long().flatten().clamp_min(0), minlength=self.label_manager.num_segmentation_heads)
            counts = c if counts is None else counts + c
        prior = (counts.double() + 1) / (counts.sum() + counts.numel())
        net = self.raw_network()
        with torch.no_grad():
            for head in net.decoder.seg_layers:
                head.bias.copy_(prior.log().to(head.bias))
        self.print_to_log_file(f"heads' bias = log prior {[round(float(p), 4) for p in prior]}")


class nnUNetTrainerProbeSGD3x(LearningProbe, nnUNetTrainer):
    """nnU-Net's SGD at 3x its learning rate (3e-2): is the step size what the narrow blocks lack?"""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 3e-2


class nnUNetTrainerProbePaper(LearningProbe, nnUNetTrainerDiceLoss):
    """The LUnet paper's recipe (tureture/LUnet configs): Adam lr 1e-2 with no schedule, Dice loss only,
    channel dropout 0.005 (nnU-Net's data, patch and deep supervision kept)."""

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        self._add_probe_hook(optimizer)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        kwargs = dict(configuration_manager.network_arch_init_kwargs, dropout_op="torch.nn.Dropout3d",
                      dropout_op_kwargs={"p": 0.005})
        imports = tuple(set(configuration_manager.network_arch_init_kwargs_req_import) | {"dropout_op"})
        return get_network_from_plans(configuration_manager.network_arch_class_name, kwargs, imports,
                                      num_input_channels, num_output_channels, allow_init=True,
                                      deep_supervision=enable_deep_supervision)
