"""Under DDP every rank must prune the same channels (and refit the same heads): two gloo processes on CPU, each
with its own batches and its own random generator, end a few pruning steps with identical networks."""
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from test_pruning_surgery import make_net

STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STRATEGIES = ("stamp", "random_widest", "random_stamp_block")


def _prune_steps(strategy: str, rank: int, world: int) -> tuple:
    """STEPS pruning steps of one strategy on this rank: (widths, checksum, all-reduce and refit ok)."""
    from nnunet_lean.pruning import heads, ranking
    from nnunet_lean.pruning.coupling import head_path
    from nnunet_lean.pruning.distributed import all_reduce_importance, decide_on_rank0
    from test_pruning_heads import kill, own_batches
    net = make_net(seed=0).eval()           # DDP starts from identical weights
    torch.manual_seed(100 + rank)           # but every rank sees other batches ...
    rng = np.random.default_rng(rank)       # ... and holds another random generator
    sums_ok, refitted = True, 0
    for step in range(STEPS):
        with torch.no_grad(), ranking.ChannelNorms(net) as rec:
            net(torch.randn(2, 2, 16, 16, 16))
        local = {n: v.clone() for n, v in rec.sums.items()}
        total = all_reduce_importance(rec.sums)
        gathered = [None] * world
        dist.all_gather_object(gathered, local)
        sums_ok &= all(torch.allclose(total[n], sum(g[n] for g in gathered), rtol=1e-5) for n in total)
        scores = ranking.normalise(total)
        widths = net.widths()
        picks = decide_on_rank0(lambda: ranking.choose(strategy, scores, widths, 3, rng))
        net.remove_picks(picks)
        # the head refit: every rank kills the cut heads alike, but holds other batches; rank 0's fit must win
        names = sorted({head_path(net.units[n]) for n, _ in picks} - {None} | {"decoder.seg_layers.2"})
        batches = own_batches(net, n=1, seed=10 * step + rank)
        for h in names:
            kill(net.get_submodule(h))
        refitted += sum(r["refit"] for r in heads.refit_heads(net, names, lambda n: batches[:n], 1).values())
    checksum = float(sum(p.double().sum() for p in net.parameters()))
    return net.widths(), checksum, sums_ok and (rank > 0 or refitted > 0)


def _rank_main(rank: int, world: int, port: int, out) -> None:
    """Every strategy in turn in one process group (each spawned process starts in seconds, not its steps)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for strategy in STRATEGIES:
            out.put((strategy, rank, *_prune_steps(strategy, rank, world)))
    finally:
        dist.destroy_process_group()


def test_ranks_prune_identically():
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = {(s, r): (w, c, ok) for s, r, w, c, ok in (out.get(timeout=120) for _ in STRATEGIES for _ in procs)}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(results) == sorted((s, r) for s in STRATEGIES for r in range(2))
    for strategy in STRATEGIES:
        (w0, c0, ok0), (w1, c1, ok1) = results[strategy, 0], results[strategy, 1]
        assert ok0 and ok1, f"{strategy}: all-reduced importance is not the sum over ranks, or rank 0 refitted no head"
        assert w0 == w1 and c0 == c1, strategy
        assert sum(w0.values()) == sum(make_net().widths().values()) - 3 * STEPS, strategy


def _trainer_rank_main(rank: int, world: int, port: int, env: dict, sync: bool, out) -> None:
    """One rank: nnU-Net's STAMP trainer on dataset 501's nnUNetPlans, wrapped in torch DDP on CPU, runs
    its own prune step (with the head refit) twice on batches no other rank sees."""
    import os
    os.environ.update(env)  # nnunetv2.paths reads its folders at import
    import json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.paths import nnUNet_preprocessed

    import nnunet_lean.pruning.trainer as pruning_trainer
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        if not sync:  # the synchronisation broken on purpose: every rank ranks and picks alone
            pruning_trainer.all_reduce_importance = dict
            pruning_trainer.decide_on_rank0 = lambda decide: decide()
        folder = os.path.join(nnUNet_preprocessed, maybe_convert_to_dataset_name(501))
        plans = dict(json.load(open(os.path.join(folder, "nnUNetPlans.json"))), continue_training=False)
        dataset_json = json.load(open(os.path.join(folder, "dataset.json")))
        t = pruning_trainer.nnUNetTrainerSTAMP(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))
        # nnU-Net assumes CUDA under DDP (device, device_ids): initialise as one process, then wrap as
        # nnUNetTrainer.initialize would, on CPU
        t.device = torch.device("cpu")
        t.is_ddp = False
        t.initialize()
        t.is_ddp = True
        t.network = torch.nn.parallel.DistributedDataParallel(t.network)
        t.importance_batches, t.prune_channels_per_step = 2, 5
        t.prune_refit_heads = "all"
        torch.manual_seed(100 + rank)
        patch = t.configuration_manager.patch_size
        target_shapes = [[round(p * s) for p, s in zip(patch, scale)] for scale in t._get_deep_supervision_scales()]

        def batches():
            while True:  # rank 1's images are smooth, rank 0's are noise: other data, other importances
                x = torch.randn(2, 1, *patch)
                if rank == 1:
                    x = torch.nn.functional.avg_pool3d(x, 5, 1, 2) * 5
                label = (x > 0.5).float()   # what the heads are refitted to, at every deep-supervision output
                yield {"data": x, "target": [torch.nn.functional.interpolate(label, size=shape).long()
                                             for shape in target_shapes]}
        t.dataloader_train = batches()
        for epoch in (1, 2):
            t.current_epoch = epoch
            t.prune_step()
        net = t.raw_network()
        assert isinstance(t.network, torch.nn.parallel.DistributedDataParallel)
        out.put((rank, net.widths(), float(sum(p.double().sum() for p in net.parameters())), net.dropout(),
                 t.optimizer.param_groups[0]["params"][0] is next(net.parameters())))
    except Exception as e:  # a rank that fails reports why
        out.put((rank, "error", repr(e), None, None))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("sync", [True, False], ids=["synchronised", "sync-broken"])
def test_the_trainers_prune_step_under_ddp_keeps_ranks_identical(hippo, sync):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    env = {k: v for k, v in hippo.env().items() if k.startswith("nnUNet_")}
    port = _free_port()
    procs = [ctx.Process(target=_trainer_rank_main, args=(r, 2, port, env, sync, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        try:
            r, *rest = out.get(timeout=300)
            results[r] = rest
        except Exception:  # queue.Empty: a rank hung (its peer failed inside a collective)
            break
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    if sync:
        (w0, c0, d0, o0), (w1, c1, d1, o1) = results[0], results[1]
        assert w0 != "error" and w1 != "error", results
        assert w0 == w1 and c0 == c1 and d0 == d1 and o0 and o1
        assert sum(w0.values()) == sum(make_net_widths_of_plans(hippo).values()) - 2 * 5
    else:
        identical = (len(results) == 2 and "error" not in (results[0][0], results[1][0])
                     and results[0] == results[1])
        assert not identical, "ranks agree although nothing synchronised them: the test cannot catch a break"


def make_net_widths_of_plans(hippo):
    from conftest import load_json
    from nnunet_lean import architecture
    from nnunet_lean.pruning.trainer import prunable_architecture

    plans = load_json(hippo.dataset_dir(501) / "nnUNetPlans.json")
    arch = prunable_architecture(plans["configurations"]["3d_fullres"]["architecture"])
    with torch.device("meta"):
        return architecture.build(arch, 1, 2, allow_init=False).widths()
