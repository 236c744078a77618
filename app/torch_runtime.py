"""Serving a model from its PyTorch checkpoint, run by torch: how the service serves on CUDA.

On CPU the service runs the ONNX export with ONNX Runtime and imports neither this module nor
torch; a checkpoint without an export is served from here on CPU too, with a warning
(:mod:`app.registry`).
"""

from __future__ import annotations

import torch

from app.inference import Array, Runners
from model.checkpoint import LoadedCheckpoint
from model.factory import forward_with_attention


def torch_runners(ckpt: LoadedCheckpoint, device: torch.device, dtype: torch.dtype) -> Runners:
    """Runners for ``ckpt`` on ``device`` in ``dtype``: NumPy in and out, the eager PyTorch model inside."""
    model = ckpt.model.to(device, dtype).eval()

    @torch.inference_mode()
    def logits(x: Array) -> Array:
        out: torch.Tensor = model(torch.from_numpy(x).to(device, dtype))
        return out.float().cpu().numpy()

    @torch.inference_mode()
    def logits_and_attention(x: Array) -> tuple[Array, Array]:
        out, attn = forward_with_attention(model, torch.from_numpy(x).to(device, dtype))
        return out.float().cpu().numpy(), attn.float().cpu().numpy()

    return Runners(logits, logits_and_attention, "eager")
