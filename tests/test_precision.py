"""bf16 autocast of training forward passes on a CPU (nnunet_lean.precision, used by the studies)."""
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_lean.precision import PrecisionError, autocast_training_forward, cpu_has_native_bf16


def _net():
    torch.manual_seed(0)
    return PlainConvUNet(1, 3, [4, 8, 8], torch.nn.Conv3d, 3, [1, 2, 2], 2, 3, [1, 1], True, torch.nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True},
                         deep_supervision=True)


def test_training_calls_run_in_bf16_and_return_fp32_eval_calls_are_untouched():
    net, x = _net(), torch.randn(2, 1, 16, 16, 16)
    if not cpu_has_native_bf16():
        with pytest.raises(PrecisionError, match="no native bf16"):
            autocast_training_forward(net)
        return
    keys = list(net.state_dict())
    net.eval()
    with torch.no_grad():
        reference_eval = net(x)
    net.train()
    reference_train = net(x)
    seen = []
    conv = net.encoder.stages[0][0].convs[0].conv
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    assert autocast_training_forward(autocast_training_forward(net)) is net   # idempotent, in place
    out = net(x)
    assert seen == [torch.bfloat16] and all(o.dtype == torch.float32 for o in out) and len(out) == 2
    diff = (out[0] - reference_train[0]).abs().max().item()
    assert 0 < diff < 0.1 * reference_train[0].abs().max().item()   # bf16 rounding, not another network
    sum(o.mean() for o in out).backward()   # gradients reach the fp32 weights
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32
    net.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(net(x), reference_eval)) and seen[-1] == torch.float32
    assert list(net.state_dict()) == keys   # checkpoints are plain
