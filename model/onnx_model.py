"""The serving artifact: the model as an ONNX graph, with its metadata, run by ONNX Runtime.

An export (``python -m training export``, :mod:`model.onnx_export`) is one ``.onnx`` file next to
the ``.safetensors`` checkpoint it came from, with the same stem. Its graph takes ``input``
(B, C, S, S) float32, B dynamic, and has two outputs: ``logits`` (B, classes) and ``attention``
(B, layers, heads, N, N), the attention maps the attention endpoint reads. Its ``metadata_props``
hold ``format`` (``vit-digits-onnx``), ``format_version`` and ``meta``: the checkpoint's metadata
(:mod:`model.meta`) plus ``checkpoint_sha256`` (the file it was exported from), ``parameters``
and ``probe``: the logits the PyTorch model gave for :func:`probe_input`. Loading runs the probe
again, so a file whose weights were damaged is refused rather than served.

This module needs NumPy and ONNX Runtime only: the serving process never imports torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model.meta import CheckpointError, CheckpointMeta, meta_from_payload, payload_from_tags

ONNX_FORMAT = "vit-digits-onnx"
ONNX_FORMAT_VERSION = 1
OUTPUTS = ("logits", "attention")
PROBE_ATOL = 1e-3  # outputs on the probe may differ this much from the recorded ones (other CPUs, ORT builds)


def onnx_path_for(checkpoint: str | Path) -> Path:
    """Where the export of ``checkpoint`` lives: the same stem, ``.onnx``."""
    return Path(checkpoint).with_suffix(".onnx")


def probe_input(channels: int, size: int) -> NDArray[np.float32]:
    """Two fixed inputs (2, channels, size, size), the same on every machine (no random generator):
    smooth stripes of different frequency, roughly in the range of normalised digits."""
    n = channels * size * size
    i = np.arange(n, dtype=np.float64)
    rows = [np.sin(i * 0.37) * 1.5 + 0.5, np.cos(i * 0.11 + 1.0) * 2.0 - 0.3]
    return np.stack(rows).reshape(2, channels, size, size).astype(np.float32)


@dataclass(frozen=True)
class OnnxModel:
    """A loaded export: the ONNX Runtime session and the metadata it carries."""

    session: Any  # onnxruntime.InferenceSession
    meta: CheckpointMeta
    checkpoint_sha256: str  # sha256 of the .safetensors file it was exported from
    parameters: int
    path: Path

    def logits(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """(B, classes) for a batch (B, C, S, S)."""
        return self.session.run(["logits"], {"input": x})[0]  # type: ignore[no-any-return]

    def logits_and_attention(self, x: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(B, classes) and (B, layers, heads, N, N) for a batch (B, C, S, S)."""
        logits, attention = self.session.run(list(OUTPUTS), {"input": x})
        return logits, attention


def cpu_session(model: str | bytes, threads: int = 0) -> Any:
    """An ONNX Runtime session on the CPU for a model file (path) or serialized model (bytes):
    ``threads`` intra-op threads (0: one per core), one inter-op thread, errors-only logging."""
    # ONNX Runtime's telemetry is on by default and, on Linux, writes a device id and a database under
    # $HOME/.cache and uploads events; a model server sends nothing anywhere. The variable is read
    # when onnxruntime is first imported (tests/model/test_onnx_export.py checks it works);
    # ORT_DISABLE_TELEMETRY=0 in the environment opts back in.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    ort.disable_telemetry_events()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def load_onnx(path: str | Path, threads: int = 0) -> OnnxModel:
    """Open the export at ``path`` with ONNX Runtime (CPU) and check it.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime intra-op threads (0: its default, one per core).

    Raises:
        CheckpointError: missing, unreadable, truncated or corrupted file; an ONNX model that is not
            a vit-digits export (no metadata) or of a newer format; invalid metadata; a graph
            without the two outputs; outputs on the probe that differ from those recorded at
            export (damaged weights). The message names the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such ONNX file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied (the serving user cannot read it)")
    try:
        session = cpu_session(str(path), threads)
    except Exception as exc:  # ORT raises its own types (InvalidProtobuf, Fail, ...) for an unreadable graph
        raise CheckpointError(f"{path}: not a readable ONNX model (truncated or corrupted?): {exc}") from exc
    payload = payload_from_tags(
        path, session.get_modelmeta().custom_metadata_map, ONNX_FORMAT, ONNX_FORMAT_VERSION, "ONNX export"
    )
    meta = meta_from_payload(path, payload)
    outputs = [o.name for o in session.get_outputs()]
    if outputs != list(OUTPUTS) or [i.name for i in session.get_inputs()] != ["input"]:
        raise CheckpointError(f"{path}: graph has outputs {outputs}; a vit-digits export has {list(OUTPUTS)}")
    digest = str(payload.get("checkpoint_sha256", ""))
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise CheckpointError(f"{path}: export metadata has no valid checkpoint_sha256")
    model = OnnxModel(
        session=session,
        meta=meta,
        checkpoint_sha256=digest,
        parameters=int(payload.get("parameters", 0)),
        path=path,
    )
    _check_probe(model, payload.get("probe"))
    return model


def _check_probe(model: OnnxModel, recorded: object) -> None:
    pre = model.meta.preprocess
    try:
        expected = np.asarray(recorded, dtype=np.float32)
        x = probe_input(model.meta.config.in_chans, pre.image_size)
        actual = model.logits(x)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{model.path}: the export's probe cannot be checked ({exc})") from exc
    except Exception as exc:  # ORT's own error types: the graph does not run on an input of its stated shape
        raise CheckpointError(f"{model.path}: the graph does not run ({exc})") from exc
    if expected.shape != actual.shape:
        raise CheckpointError(f"{model.path}: recorded probe logits {expected.shape}, graph gives {actual.shape}")
    diff = float(np.abs(actual - expected).max())
    if not diff <= PROBE_ATOL:  # also catches NaN
        raise CheckpointError(
            f"{model.path}: the graph's outputs differ from those recorded at export by {diff:.3g} "
            "(corrupted weights?); export it again with `python -m training export`"
        )
