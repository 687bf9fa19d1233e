"""Width schedules and parameter counts, against the LUnet paper's numbers."""
import pytest

from nnunet_lean import architecture
from nnunet_lean.widths import WidthChoice, doubling, largest_lean_nf, lean, resolve, scaled


def params(widths, **kw):
    return architecture.count_parameters(architecture.unet(widths, **kw), 1, 2)


def test_doubling_is_nnunets_rule():
    assert doubling(6, 32, 320) == [32, 64, 128, 256, 320, 320]
    assert doubling(5, 4, 10 ** 6) == [4, 8, 16, 32, 64]


def test_lean_and_scaled():
    assert lean(5, 8) == [8] * 5
    # the paper's linear 75/50/25 % of Unet Nf=4 are Nf = 3/2/1
    assert [scaled(doubling(5, 4, 999), f)[0] for f in (0.75, 0.5, 0.25)] == [3, 2, 1]
    assert scaled([32, 64, 320], 0.5) == [16, 32, 160]
    assert scaled([1, 2], 0.01) == [1, 1]  # never below one channel


@pytest.mark.parametrize("bad", [0.0, -0.5])
def test_scaled_rejects_non_positive(bad):
    with pytest.raises(ValueError, match="scale must be > 0"):
        scaled([32], bad)


def test_paper_unet_nf4_has_354k_parameters():
    # Table II of the LUnet paper: Unet100% Nf=4, 5 levels, 2 convs/block: 354K
    n = params(doubling(5, 4, 10 ** 6))
    assert abs(n - 354_000) / 354_000 < 0.03, n


def test_paper_lunet_sizes():
    assert abs(params(lean(5, 8)) - 40_000) / 40_000 < 0.05  # paper: ~42K
    assert abs(params(lean(5, 4)) - 10_700) / 10_700 < 0.10  # paper: 10.7K


def test_lean_has_30x_fewer_parameters_on_a_6_stage_3d_topology():
    default, lean32 = params(doubling(6, 32, 320)), params(lean(6, 32))
    assert default / lean32 >= 30, (default, lean32)


def test_counting_is_exact_against_a_real_build():
    arch = architecture.unet([4, 8, 8])
    net = architecture.build(arch, 1, 2)
    assert architecture.count_parameters(arch, 1, 2) == sum(p.numel() for p in net.parameters())


def test_largest_lean_nf_under_budget():
    budget = params(lean(5, 8))
    counter = architecture.width_counter(architecture.unet([1] * 5), 1, 2)
    assert largest_lean_nf(counter, 5, budget) == 8
    assert largest_lean_nf(counter, 5, budget - 1) == 7
    with pytest.raises(ValueError, match="too small even for Nf=1"):
        largest_lean_nf(counter, 5, 10)


def test_resolve_applies_each_choice_to_plan_widths():
    plan = [32, 64, 128, 256]
    assert resolve(WidthChoice(), plan) == plan
    assert resolve(WidthChoice.plan_base_lean(), plan) == [32] * 4  # the plan's first-stage width
    assert resolve(WidthChoice(nf=8), plan) == [8] * 4
    assert resolve(WidthChoice(scale=0.25), plan) == [8, 16, 32, 64]
    assert resolve(WidthChoice(base=4), [32, 64, 128, 256, 256]) == [4, 8, 16, 32, 64]  # the paper's Unet Nf=4
    assert resolve(WidthChoice(base=64), plan) == [64, 128, 256, 256]  # nnU-Net's cap: the plan's widest
    counter = architecture.width_counter(architecture.unet(plan), 1, 2)
    assert resolve(WidthChoice(budget=params(lean(4, 16))), plan, counter) == [16] * 4


@pytest.mark.parametrize("kwargs, message", [
    ({"nf": 4, "scale": 0.5}, "only one of"),
    ({"base": 0}, "base must be >= 1"),
    ({"nf": -1}, "Nf must be >= 1"),
    ({"nf": 0}, "Nf must be >= 1"),
    ({"nf": 8, "nf_from_plan": True}, "only one of"),
    ({"scale": 0}, "scale must be > 0"),
    ({"budget": 0}, "budget must be >= 1"),
])
def test_width_choice_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WidthChoice(**kwargs)


def test_residual_encoder_unet_gets_lean_widths():
    arch = architecture.unet(doubling(5, 32, 320), network="ResidualEncoderUNet")
    new = architecture.apply_choice(arch, WidthChoice.plan_base_lean(), 1, 3)
    assert architecture.plan_widths(new) == [32] * 5
    assert architecture.count_parameters(new, 1, 3) * 10 < architecture.count_parameters(arch, 1, 3)
