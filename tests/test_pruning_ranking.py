"""STAMP ranking, targeted-dropout probabilities and the random baselines, on hand-made numbers."""
import numpy as np
import pytest
import torch

from nnunet_lean.pruning import ranking
from test_pruning_surgery import make_net


def test_layer_normalisation_makes_stamp_prune_the_widest_layer_first():
    # equal filters everywhere: a layer of n filters scores 1/sqrt(n) each
    raw = {"narrow": torch.ones(4), "wide": torch.ones(64), "mid": torch.ones(16)}
    scores = ranking.normalise(raw)
    assert torch.allclose(scores["wide"], torch.full((64,), 1 / 8))
    picks = ranking.stamp_picks(scores, 3)
    assert [n for n, _ in picks] == ["wide"] * 3


def test_stamp_takes_the_global_minimum_and_never_empties_a_unit():
    scores = {"a": torch.tensor([0.9, 0.05]), "b": torch.tensor([0.01]), "c": torch.tensor([0.5, 0.2, 0.3])}
    assert ranking.stamp_picks(scores, 2) == [("a", 1), ("c", 1)]  # b has a single channel


def test_a_width_floor_holds_for_every_strategy_and_leaves_picks_short_when_only_floored_units_remain():
    scores = {"a": torch.tensor([0.9, 0.05, 0.04]), "b": torch.tensor([0.01, 0.02]), "c": torch.tensor([0.5, 0.2, 0.3, 0.6])}
    widths = {n: len(v) for n, v in scores.items()}
    assert ranking.choose("stamp", scores, widths, 3, np.random.default_rng(0)) == [("b", 0), ("a", 2), ("a", 1)]
    assert ranking.choose("stamp", scores, widths, 3, np.random.default_rng(0), min_channels=2) == \
        [("a", 2), ("c", 1), ("c", 2)]   # b stays at 2; a loses one, not two
    for strategy in ("stamp", "random_stamp_block", "random_widest"):
        for seed in range(5):
            picks = ranking.choose(strategy, scores, widths, 9, np.random.default_rng(seed), min_channels=2)
            left = {n: w - sum(1 for u, _ in picks if u == n) for n, w in widths.items()}
            assert min(left.values()) >= 2 and len(set(picks)) == len(picks), (strategy, picks)
    assert len(ranking.choose("stamp", scores, widths, 9, np.random.default_rng(0), min_channels=2)) == 3
    with pytest.raises(ValueError, match="min_channels must be >= 1"):
        ranking.choose("stamp", scores, widths, 1, np.random.default_rng(0), min_channels=0)


def test_a_floor_per_unit_protects_the_named_units_only():
    """A mapping floor (the trainers' higher floor at full resolution) holds for its units; the others keep 1."""
    scores = {"full": torch.tensor([0.01, 0.02, 0.03]), "deep": torch.tensor([0.5, 0.2, 0.3, 0.6])}
    widths = {n: len(v) for n, v in scores.items()}
    assert ranking.choose("stamp", scores, widths, 2, np.random.default_rng(0)) == [("full", 0), ("full", 1)]
    assert ranking.choose("stamp", scores, widths, 2, np.random.default_rng(0), min_channels={"full": 3}) == \
        [("deep", 1), ("deep", 2)]
    for seed in range(5):   # random_widest: "full" is never the widest open unit
        picks = ranking.choose("random_widest", scores, {"full": 5, "deep": 4}, 6, np.random.default_rng(seed),
                               min_channels={"full": 5, "deep": 2})
        assert sorted(n for n, _ in picks) == ["deep", "deep"], picks
    with pytest.raises(ValueError, match="min_channels must be >= 1"):
        ranking.choose("stamp", scores, widths, 1, np.random.default_rng(0), min_channels={"full": 0})


def test_dropout_probabilities_follow_the_reverse_rank():
    scores = {"important": torch.tensor([0.9, 0.8]), "middling": torch.tensor([0.5, 0.4]),
              "prunable": torch.tensor([0.1, 0.2])}
    p = ranking.dropout_probabilities(scores, p_max=0.1)
    assert p["prunable"] == pytest.approx(0.1)
    assert p["important"] < p["middling"] < p["prunable"]
    assert p["important"] == pytest.approx(0.1 * 1.5 / 5.5)  # mean reverse rank 1.5 of max 5.5


def test_random_baselines_are_seeded_and_respect_their_rule():
    widths = {"a": 4, "b": 9, "c": 9, "d": 1}
    picks = ranking.widest_picks(widths, 3, np.random.default_rng(0))
    assert ranking.widest_picks(widths, 3, np.random.default_rng(0)) == picks
    units = [n for n, _ in picks]
    assert set(units) <= {"b", "c"} and len(set(picks)) == 3
    many = {tuple(ranking.widest_picks(widths, 1, np.random.default_rng(s))) for s in range(20)}
    assert {p[0][0] for p in many} == {"b", "c"}  # ties broken at random
    scores = {"a": torch.tensor([0.5, 0.6]), "b": torch.tensor([0.01, 0.9, 0.8])}
    picked = ranking.choose("random_stamp_block", scores, {"a": 2, "b": 3}, 1, np.random.default_rng(1))
    assert picked[0][0] == "b"  # the block STAMP picked, a channel chosen at random
    with pytest.raises(ValueError, match="unknown pruning strategy"):
        ranking.choose("magnitude", scores, {"a": 2, "b": 3}, 1, np.random.default_rng(1))


def test_activation_point_norms_are_fp32_l2_over_space_batch_mean_summed_over_passes():
    net = make_net().eval()
    x = torch.randn(2, 2, 16, 16, 16)
    captured = {}
    block = net.block("enc1.0")
    handle = block.nonlin.register_forward_hook(lambda m, i, o: captured.setdefault("out", o.detach().clone()))
    with torch.no_grad(), ranking.ChannelNorms(net, "activation") as rec:
        net(x)
        net(x)
    handle.remove()
    expected = 2 * captured["out"].flatten(2).norm(dim=2).mean(0)
    assert set(rec.sums) == set(net.units)
    assert rec.sums["enc1.0"].dtype == torch.float32
    assert torch.allclose(rec.sums["enc1.0"], expected, rtol=1e-5)
    assert rec.sums["dec2.1"].shape == (6,)
    assert not rec._handles  # hooks removed


def test_conv_point_is_the_raw_conv_output_as_in_stamps_reference():
    net = make_net().train()
    first = net.block("enc0.0").conv  # its input is the network input itself: computable by hand
    x = torch.randn(3, 2, 16, 16, 16)
    with torch.no_grad(), ranking.ChannelNorms(net) as rec:  # "conv" is the default point
        net(x)
        by_hand = torch.nn.functional.conv3d(x, first.weight, first.bias, padding=1)
    expected = by_hand[:, 4].flatten(1).norm(dim=1).mean()  # channel 4: L2 over space, batch mean
    assert float(rec.sums["enc0.0"][4]) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="unknown importance point"):
        ranking.ChannelNorms(net, "bn")


@pytest.mark.parametrize("point, changes", [("activation", True), ("conv", False)])
def test_a_units_own_norm_gamma_moves_its_score_only_at_the_activation_point(point, changes):
    net = make_net().eval()
    x = torch.randn(2, 2, 16, 16, 16)

    def scores():
        with torch.no_grad(), ranking.ChannelNorms(net, point) as rec:
            net(x)
        return ranking.normalise(rec.sums)["enc1.1"]

    before = scores()
    with torch.no_grad():
        net.block("enc1.1").norm.weight[2] *= 5.0
    after = scores()
    assert (not torch.allclose(before, after, rtol=1e-4)) == changes


def test_schedule_leaves_recovery_epochs_and_stops_at_targets():
    from types import SimpleNamespace

    from nnunet_lean.pruning.trainer import nnUNetTrainerSTAMP as T

    t = SimpleNamespace(prune_start_epoch=2, prune_every=2, prune_stop_epoch=None, num_epochs=10,
                        pruning_state={"done": False})
    # a step opens its epoch: one at 8 leaves epochs 8 and 9 to recover, one at 9 would leave one
    assert [e for e in range(10) if T.should_prune(t, e)] == [2, 4, 6, 8]
    t.prune_stop_epoch = 5
    assert [e for e in range(10) if T.should_prune(t, e)] == [2, 4]
    t.pruning_state["done"] = True
    assert not any(T.should_prune(t, e) for e in range(10))

    t = SimpleNamespace(prune_target_channel_fraction=0.5, prune_target_param_fraction=None,
                        fractions_left=lambda: {"channels": 0.6, "params": 0.2})
    assert not T.target_reached(t)
    t.prune_target_param_fraction = 0.25
    assert T.target_reached(t)
    t.fractions_left = lambda: {"channels": 0.5, "params": 0.9}
    assert T.target_reached(t)


def test_fold_all_gets_a_pruning_seed_of_its_own():
    from types import SimpleNamespace

    from nnunet_lean.pruning.trainer import nnUNetTrainerSTAMP as T

    seeds = [T.fold_seed(SimpleNamespace(prune_seed=T.prune_seed, fold=f)) for f in (0, 1, 2, 3, 4, "all")]
    assert len(set(seeds)) == 6 and all(isinstance(s, int) for s in seeds)
