"""The trainers' networks, built the way nnU-Net's trainer and predictor build them."""
import inspect
import json
import sys

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunet_lean import architecture, training
from nnunet_lean.widths import doubling


def conv_out_channels(net: torch.nn.Module, conv_dim: int = 3) -> set:
    conv = getattr(torch.nn, f"Conv{conv_dim}d")
    return {m.out_channels for name, m in net.named_modules()
            if isinstance(m, conv) and "seg_layers" not in name}


@pytest.mark.parametrize("net", ["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize("trainer, expected", [
    (training.nnUNetTrainerLean, {32}),
    (training.nnUNetTrainerLean_Nf4, {4}),
    (training.nnUNetTrainerLean_Nf8, {8}),
    (training.nnUNetTrainerLean_Nf16, {16}),
    (training.nnUNetTrainerLean_Nf64, {64}),
    (training.nnUNetTrainerScaled50, {16, 32, 64, 128, 160}),
    (training.nnUNetTrainerScaled25, {8, 16, 32, 64, 80}),
    (training.nnUNetTrainerWidths, {32, 64, 128, 256, 320}),
])
def test_trainer_builds_its_widths_from_stock_plans(trainer, expected, net):
    cm = ConfigurationManager({"architecture": architecture.unet(doubling(6, 32, 320), network=net)})
    model = trainer.build_network_architecture(None, cm, 1, 3, enable_deep_supervision=True)
    assert conv_out_channels(model) == expected
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 1, 64, 64, 64))
    assert isinstance(out, (list, tuple)) and out[0].shape == (1, 3, 64, 64, 64)  # deep supervision kept


def test_predictor_calls_the_new_signature_and_gets_no_deep_supervision():
    # nnUNetPredictor inspects the signature for 'plans_manager' before calling it
    sig = inspect.signature(training.nnUNetTrainerLean.build_network_architecture)
    assert "plans_manager" in sig.parameters
    cm = ConfigurationManager({"architecture": architecture.unet([32, 64, 128], conv_dim=2)})
    model = training.nnUNetTrainerLean.build_network_architecture(None, cm, 2, 4, enable_deep_supervision=False)
    assert conv_out_channels(model, 2) == {32}
    with torch.no_grad():
        assert model(torch.zeros(1, 2, 32, 32)).shape == (1, 4, 32, 32)


def test_quick_schedule_keeps_nnunets_init_signature():
    # nnUNetTrainer records its init args by parameter name; *args/**kwargs would break checkpoints
    params = list(inspect.signature(training.nnUNetTrainerLeanQuick.__init__).parameters)
    assert params == ["self", "plans", "configuration", "fold", "dataset_json", "device"]


def test_final_validation_without_mirroring_restores_the_axes_even_when_it_fails():
    seen = []

    class Stock:   # what nnU-Net's perform_actual_validation reads
        inference_allowed_mirroring_axes = (0, 1, 2)

        def perform_actual_validation(self, save_probabilities: bool = False):
            seen.append(self.inference_allowed_mirroring_axes)
            raise RuntimeError("export failed")

    class Trainer(training.FinalValidationWithoutMirroring, Stock):
        pass

    t = Trainer()
    with pytest.raises(RuntimeError):
        t.perform_actual_validation()
    assert seen == [None] and t.inference_allowed_mirroring_axes == (0, 1, 2)


NO_MIRRORING = """
import json, os, sys, torch
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
folder = os.path.join(nnUNet_preprocessed, [d for d in os.listdir(nnUNet_preprocessed) if d.startswith("Dataset501_")][0])
plans = json.load(open(os.path.join(folder, "nnUNetPlans.json")))
dataset_json = json.load(open(os.path.join(folder, "dataset.json")))
out = {}
for name in ("nnUNetTrainerLean", "nnUNetTrainerLeanNoMirroring"):
    trainer = recursive_find_trainer_class_by_name(name)
    t = trainer(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json, torch.device("cpu"))
    t.initialize()
    train_axes = t.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[3]
    path = os.path.join(sys.argv[1], name + ".pth")
    t.save_checkpoint(path)   # what nnUNetv2_predict reads its mirroring axes from
    saved = torch.load(path, map_location="cpu", weights_only=False)["inference_allowed_mirroring_axes"]
    out[name] = {"train": None if train_axes is None else list(train_axes),
                 "predict": None if saved is None else list(saved), "optimizer": type(t.optimizer).__name__,
                 "widths": sorted({m.out_channels for n, m in t.network.named_modules()
                                   if isinstance(m, torch.nn.Conv3d) and "seg_layers" not in n})}
print("RESULT" + json.dumps(out))
"""


def test_lean_no_mirroring_trains_and_predicts_unmirrored_with_the_lean_network_and_recipe(hippo, tmp_path):
    """Found by nnU-Net's own lookup; on stock plans: LUnet Nf=32, Adam, and no mirror axes in training or in
    the checkpoint the predictor reads (nnUNetTrainerLean, its mirrored sibling, keeps all three axes)."""
    proc = hippo.run([sys.executable, "-c", NO_MIRRORING, str(tmp_path)])
    r = json.loads(proc.stdout.split("RESULT", 1)[1])
    lean, flat = r["nnUNetTrainerLean"], r["nnUNetTrainerLeanNoMirroring"]
    assert lean["train"] == lean["predict"] == [0, 1, 2]
    assert flat["train"] is None and flat["predict"] is None
    assert flat["optimizer"] == lean["optimizer"] == "Adam" and flat["widths"] == lean["widths"] == [32]
