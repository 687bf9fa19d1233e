"""Predict with nnU-Net's own nnUNetPredictor, the network replaced by a CPU backend.

From an export folder (``-m``): the manifest's plans/dataset set the predictor up through
``manual_initialization``; from trained folds (``-d/-c/-tr/-p``): the torch backend predicts them as
nnUNetv2_predict does (optionally under bf16 autocast), the other backends export them first to a
temporary folder (nothing is written into nnUNet_results).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

from nnunet_lean import runs
from nnunet_lean.deploy import backends, manifest
from nnunet_lean.deploy.adapter import BackendNetwork, TorchNetwork, fold_parameters
from nnunet_lean.deploy.errors import DeployError
from nnunet_lean.deploy.export import DEFAULT_FOLDS, export, model_folder, refuse_cascade


@dataclass
class PredictOptions:
    """nnUNetv2_predict's options, plus the backend's."""
    backend: str = "openvino"
    threads: int = 2
    precision: str = "fp32"
    step_size: float = 0.5
    disable_tta: bool = False
    save_probabilities: bool = False
    npp: int = 3
    nps: int = 3
    continue_prediction: bool = False
    verbose: bool = False
    progress_bar: bool = True

    def predictor(self):
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        with contextlib.redirect_stdout(open(os.devnull, "w")):  # "perform_everything_on_device ... cuda"
            return nnUNetPredictor(tile_step_size=self.step_size, use_gaussian=True,
                                   use_mirroring=not self.disable_tta, perform_everything_on_device=False,
                                   device=torch.device("cpu"), verbose=self.verbose,
                                   verbose_preprocessing=self.verbose, allow_tqdm=self.progress_bar)


@contextlib.contextmanager
def _no_compile() -> Iterator[None]:
    """nnUNet_compile would torch.compile whatever network the predictor is given: not the adapter."""
    old = os.environ.pop("nnUNet_compile", None)
    try:
        yield
    finally:
        if old is not None:
            os.environ["nnUNet_compile"] = old


def predictor_from_export(folder: str, folds: Optional[Sequence[str]], options: PredictOptions):
    """nnUNetPredictor around the exported folds of ``folder`` (all in its manifest by default)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    if options.backend == "torch":
        raise DeployError("the torch backend runs trained folds, an export holds ONNX models: give "
                          "-d/-c/-tr/-p instead of -m, or --backend onnxruntime / openvino")
    backends.check_choice(options.backend, options.precision)
    data, entries = manifest.read(folder, folds)
    root = Path(folder).expanduser()
    plans = json.loads((root / "plans.json").read_text())
    dataset_json = json.loads((root / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration(data["configuration"])
    runners = {e["fold"]: backends.runner(options.backend, str(root / e["file"]), options.threads, options.precision)
               for e in entries}
    network = BackendNetwork(runners, data["input"]["spatial_multiple_of"])
    predictor = options.predictor()
    axes = data["mirroring_axes"]
    with _no_compile():
        predictor.manual_initialization(network, pm, cm, fold_parameters([e["fold"] for e in entries]),
                                        dataset_json, data["trainer"], tuple(axes) if axes is not None else None)
    return predictor


def predictor_from_folds(folder: Path, folds: Sequence[str], checkpoint: str, options: PredictOptions):
    """torch backend: nnU-Net's predictor on the trained folds, its network wrapped for bf16."""
    backends.check_choice(options.backend, options.precision)
    trained = runs.run_folds(folder, folds)
    refuse_cascade(folder, trained[0].configuration)
    predictor = runs.load_predictor(trained, checkpoint, tile_step_size=options.step_size, use_gaussian=True,
                                    use_mirroring=not options.disable_tta, perform_everything_on_device=False,
                                    verbose=options.verbose, verbose_preprocessing=options.verbose,
                                    allow_tqdm=options.progress_bar)
    network = predictor.network  # nnUNet_compile may have compiled it: the adapter loads weights unprefixed
    predictor.network = TorchNetwork(getattr(network, "_orig_mod", network), options.precision)
    return predictor


def predict(input_folder: str, output_folder: str, options: PredictOptions, *, export_folder: Optional[str] = None,
            dataset: Optional[str] = None, trainer: str = "nnUNetTrainer", plans: str = "nnUNetPlans",
            configuration: Optional[str] = None, folds: Optional[Sequence[str]] = None,
            checkpoint: str = "checkpoint_final.pth") -> None:
    """Predict every case of ``input_folder`` into ``output_folder`` as nnUNetv2_predict does."""
    if not Path(input_folder).is_dir():
        raise DeployError(f"-i {input_folder} is not a folder: give the folder of images (CASE_0000.nii.gz ...)")
    backends.check_choice(options.backend, options.precision)
    torch.set_num_threads(options.threads)
    if export_folder is not None:
        _run(predictor_from_export(export_folder, folds, options), input_folder, output_folder, options)
        return
    if dataset is None or configuration is None:
        raise DeployError("give -m EXPORT_FOLDER, or -d DATASET -c CONFIGURATION "
                          "(with -tr/-p/-f as for nnUNetv2_predict)")
    folder = model_folder(dataset, trainer, plans, configuration)
    folds = list(folds) if folds else list(DEFAULT_FOLDS)
    if options.backend == "torch":
        _run(predictor_from_folds(folder, folds, checkpoint, options), input_folder, output_folder, options)
        return
    with tempfile.TemporaryDirectory(prefix="nnunet_lean_export_") as tmp:
        export(folder, folds, Path(tmp) / "export", checkpoint)
        _run(predictor_from_export(str(Path(tmp) / "export"), folds, options), input_folder, output_folder, options)


def _run(predictor, input_folder: str, output_folder: str, options: PredictOptions) -> None:
    import nnunetv2.inference.predict_from_raw_data as nnunet_predict

    # nnU-Net caps torch's threads at nnUNet_def_n_proc while it predicts (read at call time): --threads rules
    nnunet_predict.default_num_processes = options.threads
    os.makedirs(output_folder, exist_ok=True)   # nnUNetv2_predict makes it too; the sequential path needs it
    if options.npp == 0 and options.nps == 0:
        predictor.predict_from_files_sequential(input_folder, output_folder, options.save_probabilities,
                                                not options.continue_prediction)
    else:
        predictor.predict_from_files(input_folder, output_folder, options.save_probabilities,
                                     not options.continue_prediction, max(1, options.npp), max(1, options.nps))
