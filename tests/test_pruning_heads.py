"""The head refit after a pruning step (nnunet_lean.pruning.heads): a head that stopped reading its inputs is fitted
back to the labels; a head that still reads them is left alone; ignore-label voxels and regions are handled."""
import torch

from nnunet_lean.pruning import heads
from test_pruning_surgery import make_net

FULL = "decoder.seg_layers.2"   # make_net: 4 stages, 3 decoder stages, the last one at full resolution


def own_batches(net, n=3, seed=0, regions=False):
    """Batches whose targets are the network's own predictions: its heads' inputs determine them exactly."""
    g = torch.Generator().manual_seed(seed)
    out = []
    net.eval()
    with torch.no_grad():
        for _ in range(n):
            data = torch.randn(2, 2, 16, 16, 16, generator=g)
            logits = net(data)
            target = [(lo > 0) if regions else lo.argmax(1, keepdim=True) for lo in logits]
            out.append({"data": data, "target": target})
    return out


def kill(head):
    """What a cut does to a head that read foreground detectors: it predicts background everywhere."""
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0, -5.0, -5.0]))


def test_a_head_that_stopped_reading_its_inputs_is_refitted_and_one_that_reads_them_is_kept():
    net = make_net()
    batches = own_batches(net)
    kept_weight = net.get_submodule("decoder.seg_layers.1").weight.clone()
    kill(net.get_submodule(FULL))
    out = heads.refit_heads(net, [FULL, "decoder.seg_layers.1"], lambda n: batches[:n], 3)
    assert out[FULL]["dice_cut"] == 0.0
    assert out[FULL]["refit"] and out[FULL]["dice_refit"] > 0.9
    head, again = net.get_submodule(FULL), heads.collect(net, [FULL], batches, n_batches=3)[FULL]
    assert heads.dice(again.x_eval @ head.weight.flatten(1).T + head.bias, again.y_eval) > 0.9  # written into the net
    assert out["decoder.seg_layers.1"]["dice_cut"] == 1.0 and not out["decoder.seg_layers.1"]["refit"]
    assert torch.equal(net.get_submodule("decoder.seg_layers.1").weight, kept_weight)


def test_regions_are_fitted_one_sigmoid_each():
    net = make_net()
    batches = own_batches(net, regions=True)
    kill(net.get_submodule(FULL))
    out = heads.refit_heads(net, [FULL], lambda n: batches[:n], 3, regions=True)
    assert out[FULL]["refit"] and out[FULL]["dice_refit"] > 0.9


def test_ignore_label_voxels_are_left_out_and_a_missing_class_blocks_the_refit():
    net = make_net()
    batches = own_batches(net)
    for b in batches:  # class 2 becomes the ignore label (3 outputs: background, 1, 2): none left to fit
        for t in b["target"]:
            t[t == 2] = 7
    kill(net.get_submodule(FULL))
    batches[0]["target"][-1][:] = 7   # a coarse output whose every voxel is ignored: nothing to sample there
    data = heads.collect(net, [FULL, "decoder.seg_layers.0"], batches, ignore_label=7, n_batches=3)[FULL]
    assert set(data.y_fit.unique().tolist()) == {0, 1} and set(data.y_eval.unique().tolist()) <= {0, 1}
    before = net.get_submodule(FULL).weight.clone()
    out = heads.refit_heads(net, [FULL], lambda n: batches[:n], 3, ignore_label=7)
    assert out[FULL]["dice_refit"] is None and not out[FULL]["refit"]
    assert torch.equal(net.get_submodule(FULL).weight, before)
