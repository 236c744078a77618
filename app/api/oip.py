"""What the Open Inference Protocol's metadata routes say of the server and of each model.

A model's name is its id in ``/v1/models``; its one version is the first 12 hex digits of its
checkpoint's sha256, so that a version names the weights that answer (a caller that pins it gets a
404, not another model's answers, once the checkpoint changes); the platform is named as Triton
names it.
"""

from __future__ import annotations

from app.api.tensors import DEFAULT_OUTPUTS, IMAGE, INPUT, OUTPUT_TYPES, TensorLimits
from app.registry import ServedModel
from app.schemas import OipModelMetadata, OipParameters, OipTensorMetadata
from app.settings import Settings
from model.preprocess import ALLOWED_FORMATS

EXTENSIONS = ["binary_tensor_data"]
VERSION_CHARS = 12
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "eager": "pytorch_libtorch"}  # by ServedModel runtime


def model_version(served: ServedModel) -> str:
    return served.sha256[:VERSION_CHARS]


def tensor_limits(served: ServedModel, settings: Settings) -> TensorLimits:
    """A request's most pictures or inputs (the batch endpoint's limit) and the model's input shape."""
    pre = served.meta.preprocess
    return TensorLimits(settings.max_batch_files, (len(pre.mean), pre.image_size, pre.image_size))


def model_metadata(served: ServedModel, settings: Settings) -> OipModelMetadata:
    """The model's metadata: its inputs (with the normalisation ``input`` must have had) and outputs."""
    limits, grid = tensor_limits(served, settings), served.meta.config.grid_size
    pre = served.meta.preprocess
    normalised: OipParameters = {
        "normalization": "(x - mean) / std per channel; x: the digit as MNIST draws it (light on dark, in [0, 1], "
        "fitted into 20x20, mass centred in 28x28)",
        "mean": ",".join(map(str, pre.mean)),
        "std": ",".join(map(str, pre.std)),
    }
    inputs = [
        OipTensorMetadata(
            name=IMAGE,
            datatype="BYTES",
            shape=[-1],
            parameters={"content": f"an encoded picture: {', '.join(sorted(ALLOWED_FORMATS))}"},
        ),
        OipTensorMetadata(name=INPUT, datatype="FP32", shape=[-1, *limits.input_shape], parameters=normalised),
    ]
    shapes = {"probabilities": [-1, len(served.meta.labels)], "attention": [-1, grid, grid]}
    outputs = [
        OipTensorMetadata(name=name, datatype=datatype, shape=shapes.get(name, [-1]))
        for name, datatype in OUTPUT_TYPES.items()
    ]
    parameters: OipParameters = {
        "max_batch_size": limits.max_batch,
        "sha256": served.sha256,
        "labels": ",".join(served.meta.labels),
        "default_outputs": ",".join(DEFAULT_OUTPUTS),
    }
    threshold = served.meta.calibration.threshold
    if threshold is not None:
        parameters["digit_threshold"] = threshold
    return OipModelMetadata(
        name=served.id,
        versions=[model_version(served)],
        platform=PLATFORMS.get(served.loaded.runtime, served.loaded.runtime),
        inputs=inputs,
        outputs=outputs,
        parameters=parameters,
    )
