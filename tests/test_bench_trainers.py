"""The studies' budget trainers (scripts/bench_trainers): bf16 steps in a pruning run, and the pruning width floors."""
import json
from pathlib import Path

import pytest


STAMP_BUDGET_TRAINER = """
import json, os, sys, torch
sys.path.insert(0, os.environ["nnUNet_extTrainer"])
from nnunetv2.paths import nnUNet_preprocessed
from nnunet_lean_bench_trainers import nnUNetTrainerSTAMPBudget
folder = os.path.join(nnUNet_preprocessed, [d for d in os.listdir(nnUNet_preprocessed) if d.startswith("Dataset501_")][0])
plans = dict(json.load(open(os.path.join(folder, "nnUNetPlans.json"))), continue_training=False)
t = nnUNetTrainerSTAMPBudget(plans, "3d_fullres", 0, json.load(open(os.path.join(folder, "dataset.json"))),
                             torch.device("cpu"))
t.initialize()
patch = t.configuration_manager.patch_size
t.dataloader_train = iter(lambda: {"data": torch.randn(2, 1, *patch)}, None)
t.prune_refit_heads = None   # batches without labels: the head refit is tested in test_pruning_heads / _end_to_end
"""

BF16_PRUNE_STEP = STAMP_BUDGET_TRAINER + """
t.importance_batches, t.prune_channels_per_step, t.current_epoch = 2, 5, 9
net = t.raw_network()
before = sum(net.widths().values())
ranked = []   # the dtype each conv hands the ranking hooks
for m in net.modules():
    if isinstance(m, torch.nn.Conv3d):
        m.register_forward_hook(lambda m, i, o: ranked.append(str(o.dtype)))
t.prune_step()
seen, ranked_dtypes = [], sorted(set(ranked))
for m in net.modules():   # the surgery made new convs: hook those
    if isinstance(m, torch.nn.Conv3d):
        m.register_forward_hook(lambda m, i, o: seen.append(str(o.dtype)))
t.network.train()
out = t.network(torch.randn(2, 1, *patch))
sum(o.mean() for o in out).backward()
train = sorted(set(seen)); seen.clear()
t.network.eval()
with torch.no_grad():
    t.network(torch.randn(1, 1, *patch))
r = {"channels": [before, sum(net.widths().values())], "ranked": ranked_dtypes, "train": train,
     "eval": sorted(set(seen)), "out": sorted({str(o.dtype) for o in out}),
     "grads": all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters() if p.requires_grad),
     "optimizer_on_new_params": t.optimizer.param_groups[0]["params"][0] is next(net.parameters())}
print("RESULT" + json.dumps(r))
"""


def test_a_bf16_study_prunes_and_keeps_training_in_bf16_after_the_surgery(hippo, tmp_path):
    """The paper study in bf16 (reproduce_lunet.py --precision bf16) trains its pruning runs with bf16 steps: the
    ranking passes and the training steps after a surgery run the convs in bf16; eval calls and weights stay fp32.
    """
    from nnunet_lean.precision import cpu_has_native_bf16
    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16: the studies train in fp32 here")
    bench = str(Path(__file__).resolve().parents[1] / "scripts" / "bench_trainers")
    proc = hippo.python(BF16_PRUNE_STEP, extra_env={"NNUNET_LEAN_CPU_BF16": "1", "nnUNet_extTrainer": bench,
                                                    "nnUNet_results": str(tmp_path)})
    r = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert r["channels"][1] == r["channels"][0] - 5
    assert r["ranked"] == r["train"] == ["torch.bfloat16"] and r["eval"] == r["out"] == ["torch.float32"]
    assert r["grads"] and r["optimizer_on_new_params"]


FLOOR_STEP = STAMP_BUDGET_TRAINER + """
t.importance_batches, t.prune_channels_per_step, t.current_epoch = 1, 10 ** 6, 9  # each step takes all it may
r = {"defaults": t.unit_floors(), "refit_default": type(t).prune_refit_heads}
t.prune_refit_heads = "heads"
try:
    t.initialize()
except RuntimeError as e:
    r["bad_refit"] = str(e)
t.prune_refit_heads = None
t.prune_min_channels_head_inputs = 5
r["heads_5"] = t.unit_floors()
t.prune_min_channels_head_inputs = None
t.prune_min_channels_full_resolution = 3
t.prune_step()
r["full_3"] = t.raw_network().widths()
t.prune_min_channels_full_resolution, t.current_epoch = None, 10
t.prune_step()
r["full_none"] = t.raw_network().widths()
print("RESULT" + json.dumps(r))
"""


def test_a_step_that_takes_all_it_may_stops_at_the_floors(hippo, tmp_path):
    """prune_min_channels: no unit goes below two channels; prune_min_channels_full_resolution: the units at full
    resolution (encoder stage 0, the last decoder stage) keep their own, higher floor, and only they; likewise
    prune_min_channels_head_inputs for the units that feed a segmentation head."""
    bench = str(Path(__file__).resolve().parents[1] / "scripts" / "bench_trainers")
    r = json.loads(hippo.python(FLOOR_STEP, extra_env={"nnUNet_extTrainer": bench, "nnUNet_results": str(tmp_path)})
                   .stdout.split("RESULT", 1)[1])
    full = r["full_3"]
    last_dec = max(int(n[3:].split(".")[0]) for n in full if n.startswith("dec"))
    at_full = {n for n in full if n.startswith("enc0.") or n.startswith(f"dec{last_dec}.")}
    assert len(at_full) == 4 and {full[n] for n in at_full} == {3}
    assert {w for n, w in full.items() if n not in at_full} == {2}
    assert set(r["full_none"].values()) == {2}   # None: the full resolution goes down to the common floor too
    # prune_min_channels_head_inputs: the last unit of every decoder stage (it feeds that stage's head)
    heads = {n for n in full if n.startswith("dec") and n.endswith(f".{max(int(u[-1]) for u in full)}")}
    assert {n for n, f in r["heads_5"].items() if f == 5} == heads and len(heads) == last_dec + 1
    assert all(r["heads_5"][n] == r["defaults"][n] for n in full if n not in heads)
    # the trainers' default: 4 at full resolution and at every head's input, 2 elsewhere
    assert {n for n, f in r["defaults"].items() if f == 4} == at_full | heads and set(r["defaults"].values()) == {2, 4}
    assert r["refit_default"] == "all"
    assert r["bad_refit"] == "prune_refit_heads = 'heads': set it to one of None, 'cut', 'all'"
