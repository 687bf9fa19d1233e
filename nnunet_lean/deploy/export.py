"""Export trained folds to ONNX, each checked against torch before anything is written.

Each fold's network is built the way nnU-Net's predictor builds it (the trainer's
``build_network_architecture``, deep supervision off, the fold's weights loaded: pruned folds of other
widths reshape on loading), exported in fp32 at the plans' patch size with opset ``opset``, and run by
onnxruntime on a random patch: the export is refused unless the largest absolute logit difference is
under ``TOLERANCE`` of torch's logit range. The folder appears whole or not at all.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np
import torch

from nnunet_lean import runs
from nnunet_lean.deploy import backends, manifest
from nnunet_lean.deploy.errors import DeployError
from nnunet_lean.jsonio import default_folder_mode, write_json_atomically

OPSET = 17
TOLERANCE = 1e-3   # of the logit range
DEFAULT_FOLDS = ("0", "1", "2", "3", "4")   # nnU-Net's, when -f is not given


def model_folder(dataset: str, trainer: str, plans: str, configuration: str) -> Path:
    """nnUNet_results/DatasetX/TRAINER__PLANS__CONFIGURATION, as nnUNetv2_predict finds it."""
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if not nnUNet_results:
        raise DeployError("nnUNet_results is not set: point it at the folder of your trained models")
    try:
        name = maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else dataset)
    except RuntimeError:
        name = None
    folder = Path(nnUNet_results) / (name or str(dataset)) / runs.model_folder_name(trainer, plans, configuration)
    if name is None or not folder.is_dir():
        raise DeployError(f"no trained run {folder}: check -d/-tr/-p/-c (train it with nnUNetv2_train)")
    return folder


def refuse_cascade(folder: Path, configuration: str) -> None:
    """DeployError for a cascade stage (its input includes the previous stage's prediction), read from the run
    folder's plans before any weights are loaded."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    previous = PlansManager(str(Path(folder) / "plans.json")).get_configuration(configuration).previous_stage_name
    if previous is not None:
        raise DeployError(f"{configuration} is a cascade stage (it needs the {previous} prediction as input): "
                          "use nnUNetv2_predict for it, or export and predict 3d_fullres or 2d")


def total_stride(configuration_manager) -> List[int]:
    """Product of the pooling strides per axis: the sizes the network accepts are multiples of it."""
    return [int(s) for s in np.prod(np.array(configuration_manager.pool_op_kernel_sizes), axis=0)]


def check_fold(network: torch.nn.Module, path: str, example: torch.Tensor) -> dict:
    """Torch's and onnxruntime's logits on ``example``: max abs difference and torch's logit range."""
    with torch.no_grad():
        expected = network(example).numpy()
    got = backends.onnxruntime_runner(path, threads=max(1, min(4, os.cpu_count() or 1)))(example.numpy())
    if got.shape != expected.shape:
        raise DeployError(f"{Path(path).name}: the exported model returns {got.shape}, torch {expected.shape}")
    diff = float(np.abs(got - expected).max())
    span = float(expected.max() - expected.min())
    return {"backend": "onnxruntime", "max_abs_diff": diff, "logit_range": span,
            "passed": bool(diff <= TOLERANCE * max(span, 1e-12))}


def export(folder: Union[str, Path], folds: Sequence[Union[int, str]], out: Union[str, Path],
           checkpoint: str = "checkpoint_final.pth", opset: int = OPSET, overwrite: bool = False) -> dict:
    """Export ``folds`` of the run folder ``folder`` into ``out``; returns the manifest."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise DeployError(f"{out} exists: give another -o, or --overwrite")
        if not (out / manifest.MANIFEST).is_file():
            raise DeployError(f"{out} exists and is not an export folder (no {manifest.MANIFEST}): --overwrite "
                              "replaces only an earlier export; give another -o")
    backends.require("onnxruntime")  # the self-check runs the exported file
    trained = runs.run_folds(folder, folds)
    refuse_cascade(folder, trained[0].configuration)
    predictor = runs.load_predictor(trained, checkpoint)
    cm, pm = predictor.configuration_manager, predictor.plans_manager
    channels = determine_num_input_channels(pm, cm, predictor.dataset_json)
    patch = [int(p) for p in cm.patch_size]
    example = torch.randn(1, channels, *patch, generator=torch.Generator().manual_seed(0))
    network = getattr(predictor.network, "_orig_mod", predictor.network).eval()  # nnUNet_compile may wrap it
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        entries = []
        for run, weights in zip(trained, predictor.list_of_parameters):
            network.load_state_dict(weights)
            name = f"fold_{run.fold}.onnx"
            _onnx_export(network, example, str(tmp / name), opset)
            check = check_fold(network, str(tmp / name), example)
            if not check["passed"]:
                raise DeployError(f"fold {run.fold}: exported logits differ from torch's by "
                                  f"{check['max_abs_diff']:.3g} "
                                  f"(logit range {check['logit_range']:.3g}, allowed {TOLERANCE:g} of it): "
                                  f"nothing written; try another --opset")
            entries.append({"fold": str(run.fold), "file": name, "checkpoint": checkpoint,
                            "parameters": runs.checkpoint_parameters({"network_weights": weights}),
                            "widths": runs.conv_widths(weights), "self_check": check})
        for f in ("plans.json", "dataset.json"):
            shutil.copy(Path(folder) / f, tmp / f)
        for pp in sorted(Path(folder).glob("crossval_results_folds_*/postprocessing.*")):
            (tmp / "postprocessing" / pp.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(pp, tmp / "postprocessing" / pp.parent.name / pp.name)
        lm = predictor.label_manager
        axes = predictor.allowed_mirroring_axes
        data = {"format": manifest.FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "dataset": trained[0].dataset_name, "trainer": predictor.trainer_name,
                "plans": trained[0].plans, "configuration": trained[0].configuration,
                "precision": "fp32", "opset": opset,
                "input": {"name": "image", "shape": [1, channels, *patch], "patch_size": patch,
                          "spatial_multiple_of": total_stride(cm)},
                "output": {"name": "logits", "channels": lm.num_segmentation_heads},
                "mirroring_axes": list(axes) if axes is not None else None,
                "labels": predictor.dataset_json["labels"], "has_regions": lm.has_regions,
                "regions_class_order": predictor.dataset_json.get("regions_class_order"),
                "folds": entries, "versions": backends.installed_versions(),
                "files": manifest.file_hashes(tmp)}
        write_json_atomically(data, str(tmp / manifest.MANIFEST), indent=1)
        os.chmod(tmp, default_folder_mode())   # mkdtemp's 0700 would keep the shipped folder private
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return data


def _onnx_export(network: torch.nn.Module, example: torch.Tensor, path: str, opset: int) -> None:
    """TorchScript-based export (dynamo=False): batch and spatial axes dynamic (sizes the network's
    total stride divides); InstanceNorm's training-mode warning is expected and harmless."""
    spatial = {i: f"s{i}" for i in range(2, example.ndim)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (example,), path, opset_version=opset, dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch", **spatial}, "logits": {0: "batch", **spatial}})

