"""CPU inference backends for an exported fold: each turns one ``.onnx`` file into a function
numpy float32 (1, C, *patch) -> numpy float32 logits. Imported lazily: a backend that is not installed
is a DeployError naming the install command."""
from __future__ import annotations

import importlib
from typing import Callable, Dict

import numpy as np

from nnunet_lean.deploy.errors import INSTALL_HINT, DeployError

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
# what runs each precision (onnxruntime's CPU provider has no bf16 convolutions)
SUPPORTED = {"torch": PRECISIONS, "onnxruntime": ("fp32",), "openvino": PRECISIONS}

Runner = Callable[[np.ndarray], np.ndarray]


def require(module: str):
    """Import a deploy dependency; DeployError with the install command when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DeployError(f"{module} is not installed ({e.msg}): {INSTALL_HINT}") from None


def check_choice(backend: str, precision: str) -> None:
    if backend not in BACKENDS:
        raise DeployError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if precision not in SUPPORTED[backend]:
        able = [b for b in BACKENDS if precision in SUPPORTED[b]]
        raise DeployError(f"{backend} does not run {precision}: use --backend {' or '.join(able)}")
    if backend != "torch":
        require(backend)


def onnxruntime_runner(path: str, threads: int) -> Runner:
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino_runner(path: str, threads: int, precision: str = "fp32") -> Runner:
    """OpenVINO reads the .onnx directly. Its CPU plugin defaults to bf16 where the CPU has it: fp32 is
    asked for explicitly. Each input shape gets its own static compiled model (fastest on CPU)."""
    ov = require("openvino")
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision]}
    compiled: Dict[tuple, object] = {}

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape not in compiled:
            model = core.read_model(path)
            model.reshape({model.inputs[0].any_name: list(x.shape)})
            compiled[x.shape] = core.compile_model(model, "CPU", config)
        model = compiled[x.shape]
        return np.array(model(x)[model.outputs[0]], copy=True)  # the request reuses its output buffer
    return run


def runner(backend: str, path: str, threads: int, precision: str = "fp32") -> Runner:
    """The function that runs the exported model at ``path`` with ``backend``."""
    check_choice(backend, precision)
    if backend == "onnxruntime":
        return onnxruntime_runner(path, threads)
    if backend == "openvino":
        return openvino_runner(path, threads, precision)
    raise DeployError("the torch backend runs the trained folds, not an export: give -d/-c/-tr/-p, or use "
                      "--backend onnxruntime or openvino with -m")


def installed_versions() -> Dict[str, str]:
    """Versions of the packages an export was made and checked with."""
    from importlib import metadata
    out = {}
    for dist in ("nnunet-lean", "nnunetv2", "torch", "onnx", "onnxruntime", "openvino",
                 "dynamic-network-architectures"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
