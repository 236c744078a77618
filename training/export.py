"""``python -m training export``: the ONNX serving artifact of a checkpoint (:mod:`model.onnx_export`).

Training and ``trust --write`` call :func:`export_next_to` themselves, so the export never lags
behind the checkpoint it comes from; the command is for checkpoints made before exports existed,
or elsewhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

from model.checkpoint import load_checkpoint
from model.onnx_export import ExportReport, export_onnx

log = logging.getLogger(__name__)


def export_next_to(checkpoint: Path, output: Path | None = None) -> ExportReport:
    """Export ``checkpoint`` (to ``output``, default: the same path with ``.onnx``) and log where."""
    report = export_onnx(load_checkpoint(checkpoint), output)
    log.info(
        "wrote %s (%.0f KB); largest difference from PyTorch: logits %.2g, attention %.2g",
        report.path,
        report.size_bytes / 1024,
        report.logits_diff,
        report.attention_diff,
    )
    return report


def run_export(checkpoint: Path, output: Path | None) -> ExportReport:
    report = export_next_to(checkpoint, output)
    print(f"{report.path}  logits diff {report.logits_diff:.2g}  attention diff {report.attention_diff:.2g}")
    return report
