"""Channel surgery on PrunableUNet: removing a channel that feeds nothing changes nothing."""
import random

import pytest
import torch

from nnunet_lean import architecture

PRUNABLE = "nnunet_lean.pruning.network.PrunableUNet"


def make_net(widths=(6, 8, 10, 12), norm="InstanceNorm3d", seed=0):
    torch.manual_seed(seed)
    arch = architecture.unet(list(widths))
    arch["network_class_name"] = PRUNABLE
    arch["arch_kwargs"]["norm_op"] = f"torch.nn.modules.{'instancenorm' if 'Instance' in norm else 'batchnorm'}.{norm}"
    net = architecture.build(arch, 2, 3, deep_supervision=True)
    if norm.startswith("BatchNorm"):  # give running stats values worth keeping
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return net


def silence(net, name, c):
    """Zero every weight through which output channel c of unit `name` reaches the rest of the net."""
    unit = net.units[name]
    with torch.no_grad():
        for cons in unit.consumers:
            mod = net.get_submodule(cons.path)
            offset = net.get_submodule(cons.offset_of).out_channels if cons.offset_of else 0
            mod.weight.narrow(cons.dim, offset + c, 1).zero_()


def outputs(net, x, train):
    net.train(train)
    with torch.no_grad():
        return [o.clone() for o in net(x)]


def test_coupling_table_covers_every_conv_unit():
    net = make_net()
    assert list(net.units)[:3] == ["enc0.0", "enc0.1", "enc1.0"]
    assert len(net.units) == 4 * 2 + 3 * 2
    skip = net.units["enc1.1"].consumers
    assert [c.path for c in skip] == ["encoder.stages.2.0.convs.0.conv", "decoder.stages.1.convs.0.conv"]
    assert skip[1].offset_of == "decoder.transpconvs.1"
    assert [c.path for c in net.units["enc3.1"].consumers] == ["decoder.transpconvs.0"]
    assert [c.path for c in net.units["dec2.1"].consumers] == ["decoder.seg_layers.2"]


@pytest.mark.parametrize("norm", ["InstanceNorm3d", "BatchNorm3d"])
@pytest.mark.parametrize("train", [True, False])
def test_removing_a_silenced_channel_leaves_the_output_unchanged(norm, train):
    net = make_net(norm=norm)
    x = torch.randn(2, 2, 16, 16, 16)
    rng = random.Random(0)
    # every skip unit twice (shifts the concat offsets), plus bottleneck, decoder and inner convs
    order = ["enc0.1", "enc1.1", "enc2.1", "enc0.1", "enc1.1", "enc2.1", "enc3.1", "enc3.0",
             "dec0.1", "dec1.0", "dec2.1", "enc0.0", "dec0.0"]
    for name in order:
        c = rng.randrange(net.block(name).conv.out_channels)
        silence(net, name, c)
        before = outputs(net, x, train)
        width = net.block(name).conv.out_channels
        net.remove(name, [c])
        after = outputs(net, x, train)
        assert net.block(name).conv.out_channels == width - 1
        for b, a in zip(before, after):
            assert (b - a).abs().max().item() <= 1e-5, name
    # transposed convs and seg heads keep their outputs; the input stays 2 channels
    assert net.decoder.transpconvs[1].out_channels == 8 and net.decoder.seg_layers[0].out_channels == 3
    assert net.block("enc0.0").conv.in_channels == 2


def test_surgery_keeps_norm_and_bias_rows_in_step():
    net = make_net(norm="BatchNorm3d")
    block = net.block("enc1.1")
    keep = [0, 2, 5, 7]
    expected = {k: getattr(block.norm, k).detach().clone()[keep] for k in ("weight", "bias", "running_mean",
                                                                            "running_var")}
    bias = block.conv.bias.detach().clone()[keep]
    net.select("enc1.1", keep)
    for k, v in expected.items():
        assert torch.equal(getattr(block.norm, k), v), k
    assert torch.equal(block.conv.bias, bias) and block.norm.num_features == 4


def test_a_conv_keeps_at_least_one_channel():
    net = make_net()
    with pytest.raises(ValueError, match="at least one channel"):
        net.remove("enc0.0", range(6))


def test_load_state_dict_reshapes_to_pruned_and_back_to_wider_widths():
    pruned = make_net(seed=1)
    for name, chans in [("enc1.1", [0, 3]), ("dec0.0", [1]), ("enc3.1", [0, 1, 2])]:
        pruned.remove(name, chans)
    x = torch.randn(1, 2, 16, 16, 16)

    fresh = make_net(seed=2)  # full width, like nnU-Net's predictor builds it
    fresh.load_state_dict(pruned.state_dict())
    assert fresh.widths() == pruned.widths()
    assert set(fresh.state_dict()) == set(make_net().state_dict())  # a plain PlainConvUNet state dict
    for a, b in zip(outputs(pruned, x, False), outputs(fresh, x, False)):
        assert torch.allclose(a, b, atol=1e-6)

    wide = make_net(seed=3)  # a second fold with other widths loads into the same object
    fresh.load_state_dict(wide.state_dict())
    assert fresh.widths() == wide.widths()
    for a, b in zip(outputs(wide, x, False), outputs(fresh, x, False)):
        assert torch.allclose(a, b, atol=1e-6)


def test_unit_widths_build_the_pruned_architecture_from_scratch():
    pruned = make_net()
    pruned.remove("enc2.1", [0, 1, 2])
    arch = architecture.unet([6, 8, 10, 12])
    arch["network_class_name"] = PRUNABLE
    arch["arch_kwargs"]["unit_widths"] = pruned.widths()
    scratch = architecture.build(arch, 2, 3)
    assert scratch.widths() == pruned.widths()
    assert scratch.num_parameters() == pruned.num_parameters()


def test_pruning_trainers_build_a_prunable_net_and_refuse_residual_encoders():
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    from nnunet_lean.pruning.network import PrunableUNet
    from nnunet_lean.pruning.trainer import nnUNetTrainerSTAMP

    plain = ConfigurationManager({"architecture": architecture.unet([8, 16, 32])})
    net = nnUNetTrainerSTAMP.build_network_architecture(None, plain, 1, 2, enable_deep_supervision=True)
    assert isinstance(net, PrunableUNet) and net.widths()["enc2.0"] == 32 and net.decoder.deep_supervision
    resenc = ConfigurationManager({"architecture": architecture.unet([8, 16, 32], network="ResidualEncoderUNet")})
    with pytest.raises(RuntimeError, match="channel pruning needs a PlainConvUNet plan, got ResidualEncoderUNet"):
        nnUNetTrainerSTAMP.build_network_architecture(None, resenc, 1, 2)


def test_carried_optimizer_state_is_cut_like_the_weights_and_steps_on():
    """prune_keep_optimizer_state: Adam's moments follow their channels through a surgery (skip units shift
    the decoder's concat offsets; a consumer cut twice chains), untouched parameters keep theirs."""
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(2, 2, 16, 16, 16)
    sum(o.square().mean() for o in net(x)).backward()
    opt.step()
    dec = net.get_submodule("decoder.stages.1.convs.0.conv")   # consumes enc1.1 (skip) and the transpconv
    old_w, old_m = dec.weight, opt.state[dec.weight]["exp_avg"].clone()
    untouched = net.get_submodule("decoder.seg_layers.0").weight
    net.surgery_log = []
    net.remove_picks([("enc1.1", 0), ("enc1.1", 3), ("dec1.0", 2)])
    carried = net.carry_state(opt.state)
    new_w = net.get_submodule("decoder.stages.1.convs.0.conv").weight
    offset = net.get_submodule("decoder.transpconvs.1").out_channels
    keep_in = [c for c in range(old_w.shape[1]) if c not in (offset + 0, offset + 3)]
    keep_out = [c for c in range(old_w.shape[0]) if c != 2]
    assert torch.equal(new_w, old_w.detach()[keep_out][:, keep_in])
    assert torch.equal(carried[new_w]["exp_avg"], old_m[keep_out][:, keep_in])
    assert carried[new_w]["step"] == opt.state[old_w]["step"]
    assert torch.equal(carried[untouched]["exp_avg"], opt.state[untouched]["exp_avg"]) and old_w not in carried
    assert {id(p) for p in carried} == {id(p) for p in net.parameters()}
    fresh = torch.optim.Adam(net.parameters(), lr=1e-3)
    fresh.state.update(carried)
    sum(o.square().mean() for o in net(x)).backward()
    fresh.step()   # the carried moments fit their parameters
    assert fresh.state[new_w]["step"] == 2
