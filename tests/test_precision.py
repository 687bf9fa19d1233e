"""CPU numerics (nnunet_lean.precision): bf16 autocast of training forward passes (used by the studies) and
denormals flushed to zero (every trainer of ours)."""
import subprocess
import sys

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


# a parallel op over 2^20 smallest denormals (written as bits): how many stay non-zero
_COUNT = ("x = torch.ones(1 << 20, dtype=torch.int32).view(torch.float32); "
          "print(int(((x * 1.0) != 0).sum()))")


def _python(code: str, cwd) -> list:
    """Run ``code`` in a fresh interpreter with two torch threads (a fresh OpenMP pool), outside the checkout
    (which would shadow the installed package); its printed words."""
    out = subprocess.run([sys.executable, "-c", "import torch; torch.set_num_threads(2); "
                          "from nnunet_lean.precision import flush_denormals; " + code],
                         capture_output=True, text=True, check=True, cwd=cwd, timeout=300)
    return out.stdout.split()


def test_denormals_are_flushed_on_every_thread_when_set_before_the_pool_exists(tmp_path):
    assert _python(_COUNT, tmp_path) == [str(1 << 20)]   # by default denormals survive: the flag flushes them
    assert _python("print(flush_denormals()); " + _COUNT, tmp_path) == ["True", "0"]


def test_flushing_after_the_pool_exists_is_reported_as_partial(tmp_path):
    # the OpenMP workers copied the main thread's flags when the first parallel op created them
    words = _python("torch.ones(1 << 20).mul_(2); print(flush_denormals()); " + _COUNT, tmp_path)
    assert words[0] == "False" and 0 < int(words[1]) < 1 << 20
