"""Under DDP every rank must prune the same channels: two gloo processes on CPU, each with its own
batches and its own random generator, end a few pruning steps with identical networks."""
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


def _rank_main(rank: int, world: int, port: int, strategy: str, out) -> None:
    from nnunet_lean.pruning import ranking
    from nnunet_lean.pruning.distributed import all_reduce_importance, decide_on_rank0
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        net = make_net(seed=0).eval()           # DDP starts from identical weights
        torch.manual_seed(100 + rank)           # but every rank sees other batches ...
        rng = np.random.default_rng(rank)       # ... and holds another random generator
        sums_ok = True
        for _ in range(STEPS):
            with torch.no_grad(), ranking.ActivationNorms(net) as rec:
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
        checksum = float(sum(p.double().sum() for p in net.parameters()))
        out.put((rank, net.widths(), checksum, sums_ok))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("strategy", ["stamp", "random_widest", "random_stamp_block"])
def test_ranks_prune_identically(strategy):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, strategy, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, (w, c, ok)) for r, w, c, ok in (out.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    (w0, c0, ok0), (w1, c1, ok1) = results[0], results[1]
    assert ok0 and ok1, "all-reduced importance is not the sum over ranks"
    assert w0 == w1 and c0 == c1
    assert sum(w0.values()) == sum(make_net().widths().values()) - 3 * STEPS
