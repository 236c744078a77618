"""Writing the serving artifact (:mod:`model.onnx_model`) from a safetensors checkpoint.

The graph is made by torch's TorchScript-based exporter (``dynamo=False``): it exports our ViT
and timm's in well under a second, and the graph it makes is the one ONNX Runtime runs fastest
here (docs/PERFORMANCE.md). Before the file takes its place, it is loaded back and compared
with the PyTorch model on several batch sizes: logits and attention maps must agree within
:data:`TOLERANCE`.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import LoadedCheckpoint
from model.factory import WithAttention, count_parameters
from model.meta import CheckpointError
from model.onnx_model import ONNX_FORMAT, ONNX_FORMAT_VERSION, OUTPUTS, load_onnx, onnx_path_for, probe_input

OPSET = 17
TOLERANCE = 1e-4  # largest absolute difference allowed between the export and PyTorch, any output
CHECK_BATCHES = (1, 5, 32)


@dataclass(frozen=True)
class ExportReport:
    """Where the export went and how far its outputs are from PyTorch's (largest abs difference)."""

    path: Path
    logits_diff: float
    attention_diff: float
    size_bytes: int


def export_onnx(ckpt: LoadedCheckpoint, path: str | Path | None = None, seed: int = 0) -> ExportReport:
    """Export ``ckpt`` to ONNX at ``path`` (default: next to the checkpoint, ``.onnx``), atomically.

    Raises:
        CheckpointError: the model has no attention maps (``attention`` other than ``full``), which
            the serving artifact carries; or the export does not reproduce the PyTorch model within
            :data:`TOLERANCE`.
    """
    path = Path(path) if path is not None else onnx_path_for(ckpt.path)
    if ckpt.meta.config.attention != "full":
        raise CheckpointError(
            f"{ckpt.path}: attention={ckpt.meta.config.attention!r} has no attention maps, which the export "
            f"serves; only attention='full' models can be exported"
        )
    model = WithAttention(ckpt.model.float().cpu()).eval()
    pre, chans = ckpt.meta.preprocess, ckpt.meta.config.in_chans
    probe = torch.from_numpy(probe_input(chans, pre.image_size))
    with torch.no_grad():
        probe_logits = model(probe)[0]
    payload = ckpt.meta.to_json() | {
        "checkpoint_sha256": ckpt.sha256,
        "parameters": count_parameters(ckpt.model),
        "probe": probe_logits.tolist(),
        "exported": {"created": datetime.now(UTC).isoformat(timespec="seconds"), "torch": torch.__version__},
    }
    graph = onnx_graph(model, probe, payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(graph)
        os.chmod(tmp, 0o644)
        diffs = _compare(model, tmp, chans, pre.image_size, seed)
        if max(diffs) > TOLERANCE:
            raise CheckpointError(
                f"{path}: the export differs from the PyTorch model by {max(diffs):.3g} (> {TOLERANCE}); not written"
            )
        os.replace(tmp, path)  # readers never see a half-written or unchecked export
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ExportReport(path, diffs[0], diffs[1], path.stat().st_size)


def onnx_graph(model: torch.nn.Module, example: torch.Tensor, payload: dict[str, object] | None = None) -> bytes:
    """``model`` (a :class:`~model.factory.WithAttention`) as a serialized ONNX model with a dynamic
    batch axis, and ``payload`` as its metadata (none if None)."""
    import json

    import onnx

    model.eval()  # the exporter puts every module back in the mode the top one is in
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings; the legacy exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript-based exporter writes to file objects too
            input_names=["input"],
            output_names=list(OUTPUTS),
            dynamic_axes={name: {0: "batch"} for name in ["input", *OUTPUTS]},
            opset_version=OPSET,
            dynamo=False,
        )
    if payload is None:
        return buffer.getvalue()
    proto = onnx.load_from_string(buffer.getvalue())
    del proto.metadata_props[:]
    for key, value in (
        ("format", ONNX_FORMAT),
        ("format_version", str(ONNX_FORMAT_VERSION)),
        ("meta", json.dumps(payload, sort_keys=True)),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()  # type: ignore[no-any-return]


def _compare(model: torch.nn.Module, path: str, chans: int, size: int, seed: int) -> tuple[float, float]:
    """Largest abs difference between the written file (loaded as the service loads it) and
    PyTorch, over random batches of every size in :data:`CHECK_BATCHES`: (logits, attention)."""
    exported = load_onnx(path, threads=1)
    rng = np.random.default_rng(seed)
    worst = [0.0, 0.0]
    for batch in CHECK_BATCHES:
        x = rng.standard_normal((batch, chans, size, size), dtype=np.float32)
        with torch.no_grad():
            expected = [t.numpy() for t in model(torch.from_numpy(x))]
        actual = exported.logits_and_attention(x)
        for i in range(2):
            worst[i] = max(worst[i], float(np.abs(actual[i] - expected[i]).max()))
    return worst[0], worst[1]
