"""Serving a model from its PyTorch checkpoint: on CUDA, or on CPU for a checkpoint not exported yet.

On CPU the service normally runs the ONNX export (:mod:`model.onnx_model`) and never imports this
module, nor torch. Here the checkpoint is loaded with torch and run by one of three runtimes
(setting ``VIT_DIGITS_RUNTIME``):

- ``onnxruntime`` (``auto`` on CPU): the model exported to ONNX in memory at load time
  (:func:`model.onnx_export.onnx_graph`), run by ONNX Runtime on the CPU.
- ``torchscript`` (``auto`` on CUDA): a frozen TorchScript trace. Eager PyTorch re-enters Python
  (and so takes the GIL) for every module of the forward pass, about 150 times per batch; while
  the event loop is busy each of those waits for the GIL's switch interval. The trace and ONNX
  Runtime run the whole graph in C++ with the GIL released (README "Performance" has the figures).
- ``eager``: the PyTorch module itself.

Whatever is compiled is checked against the eager model on two batch sizes when it loads; if it
cannot be built or does not reproduce the eager outputs, the next runtime down is used
(onnxruntime, then torchscript, then eager) and a warning logged. ``/v1/models`` says which runs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import nn

from app.inference import Array, Runners
from model.checkpoint import LoadedCheckpoint
from model.factory import WithAttention

log = logging.getLogger(__name__)
Runner = Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]]
Runtime = Literal["onnxruntime", "torchscript", "eager"]
RUNTIMES: tuple[Runtime, ...] = ("onnxruntime", "torchscript", "eager")  # each falls back to the next


def resolve_runtime(requested: str, device: torch.device) -> Runtime:
    """The runtime to serve a checkpoint with: ``auto`` means ONNX Runtime on CPU, TorchScript on
    CUDA. ONNX Runtime serves on CPU only here (its CUDA build is another package)."""
    if requested == "auto":
        return "onnxruntime" if device.type == "cpu" else "torchscript"
    if requested == "onnxruntime" and device.type != "cpu":
        raise ValueError(f"runtime onnxruntime serves on CPU only; on {device} use torchscript or eager")
    if requested not in RUNTIMES:
        raise ValueError(f"unknown runtime {requested!r}; one of auto, {', '.join(RUNTIMES)}")
    return requested  # type: ignore[return-value]


def torch_runners(
    ckpt: LoadedCheckpoint, device: torch.device, dtype: torch.dtype, runtime: Runtime, threads: int
) -> Runners:
    """Runners for ``ckpt`` on ``device``: NumPy in and out, torch inside."""
    model = ckpt.model.to(device, dtype)
    pre, chans = ckpt.meta.preprocess, ckpt.meta.config.in_chans
    example = torch.randn(4, chans, pre.image_size, pre.image_size, device=device, dtype=dtype)
    predict, used = build_runner(model, example, runtime, threads)
    attention, _ = build_runner(WithAttention(model), example, runtime, threads)

    @torch.inference_mode()
    def logits(x: Array) -> Array:
        out = predict(torch.from_numpy(x).to(device, dtype))
        assert isinstance(out, torch.Tensor)
        return out.float().cpu().numpy()

    @torch.inference_mode()
    def logits_and_attention(x: Array) -> tuple[Array, Array]:
        out, attn = attention(torch.from_numpy(x).to(device, dtype))
        return out.float().cpu().numpy(), attn.float().cpu().numpy()

    return Runners(logits, logits_and_attention, used)


def build_runner(module: nn.Module, example: torch.Tensor, runtime: Runtime, threads: int) -> tuple[Runner, Runtime]:
    """``module`` compiled for ``runtime`` and checked against its eager outputs, falling back to
    the next runtime down if that fails; returns the runner and the runtime it uses.

    Args:
        module: the model (or its attention path); put in eval mode here.
        example: an input batch; the compiled runner accepts any batch size.
        runtime: where to start; see :data:`RUNTIMES`.
        threads: ONNX Runtime intra-op threads (0: its default); torch's are set globally.
    """
    module.eval()
    builders: dict[Runtime, Callable[[], Runner]] = {
        "onnxruntime": lambda: _onnxruntime(module, example, threads),
        "torchscript": lambda: _torchscript(module, example),
    }
    for candidate in RUNTIMES[RUNTIMES.index(runtime) :]:
        if candidate == "eager":
            break
        try:
            runner = builders[candidate]()
            with torch.inference_mode():
                for batch in (example, torch.cat([example, example[:1]])):  # another batch size too
                    _assert_close(module(batch), runner(batch))
        except Exception as exc:  # any export or tracing problem: serve with the next runtime
            log.warning("%s runtime failed; falling back", candidate, extra={"error": str(exc)})
            continue
        return runner, candidate
    return module, "eager"


def _torchscript(module: nn.Module, example: torch.Tensor) -> Runner:
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values; deprecation
        return torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))


def _onnxruntime(module: nn.Module, example: torch.Tensor, threads: int) -> Runner:
    """``module`` exported to ONNX in memory, with a dynamic batch axis, run by ONNX Runtime."""
    from model.onnx_export import onnx_graph
    from model.onnx_model import cpu_session

    # one graph with both outputs, as the export has; a bare model asks for the logits only (the
    # attention maps are computed on the way to them anyway: it costs no more)
    whole = module if isinstance(module, WithAttention) else WithAttention(module)
    session = cpu_session(onnx_graph(whole, example), threads)
    names = [o.name for o in session.get_outputs()]
    if whole is not module:
        names = names[:1]

    def run(x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = [torch.from_numpy(np.asarray(a)) for a in session.run(names, {"input": x.contiguous().numpy()})]
        return out[0] if len(out) == 1 else tuple(out)

    return run


def _assert_close(eager: object, traced: object) -> None:
    expected = eager if isinstance(eager, tuple) else (eager,)
    actual = traced if isinstance(traced, tuple) else (traced,)
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-4)
