"""Batched inference functions the batchers run: probabilities, and attention maps.

The model is served through one of three runtimes (setting ``VIT_DIGITS_RUNTIME``):

- ``onnxruntime`` (the default on CPU): the model exported to ONNX in memory when it loads and run by
  ONNX Runtime. On this project's 2-core CPU it runs the shipped model about 1.25x faster than the
  TorchScript trace (0.66 against 0.82 ms per image in batches of 16, one thread), and the service
  answers about 13% more requests per second at concurrency 32 (bench/serve_load.py, README
  "Performance"). The export uses the TorchScript-based exporter (``dynamo=False``): it takes
  0.4 s per model, where the ``torch.export``-based one makes the same graph in about 8 s, at
  every start of every worker.
- ``torchscript`` (the default on CUDA): a frozen TorchScript trace. Eager PyTorch re-enters Python
  (and so takes the GIL) for every module of the forward pass, about 150 times per batch; while
  the event loop is busy, each of those waits for the GIL's switch interval, and a batch that
  takes 26 ms alone took 530 ms next to a busy Python thread (measured here). The trace and ONNX
  Runtime run the whole graph in C++ with the GIL released.
- ``eager``: the PyTorch module itself.

Whatever is compiled is checked against the eager model on two batch sizes when it loads; if it
cannot be built or does not reproduce the eager outputs, the next runtime down is used
(onnxruntime, then torchscript, then eager) and a warning logged. ``/v1/models`` says which runs.
TorchScript and the TorchScript-based ONNX exporter are both deprecated in favour of
``torch.export``; on a CPU server ``torch.compile`` needs a C++ toolchain at run time.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from model.calibration import Calibration
from model.checkpoint import LoadedCheckpoint
from model.factory import forward_with_attention, match_channels
from model.rollout import attention_rollout, cls_attention

log = logging.getLogger(__name__)
Runner = Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]]
Runtime = Literal["onnxruntime", "torchscript", "eager"]
RUNTIMES: tuple[Runtime, ...] = ("onnxruntime", "torchscript", "eager")  # each falls back to the next


@dataclass(frozen=True)
class Prediction:
    """Calibrated probabilities, the digit score and the verdict decided from it
    (:class:`model.calibration.Calibration` of the checkpoint)."""

    probabilities: list[float]
    digit_score: float
    is_digit: bool


@dataclass(frozen=True)
class AttentionResult(Prediction):
    rollout: torch.Tensor  # (g, g), sums to 1
    cls_attention: torch.Tensor  # (g, g), last layer, head mean
    layers: torch.Tensor  # (layers, heads, g, g): each layer's and head's class-token attention


class WithAttention(nn.Module):
    """The model's attention path as a module of its own, so that it can be traced."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_with_attention(self.model, x)


def resolve_runtime(requested: str, device: torch.device) -> Runtime:
    """The runtime to serve with: ``auto`` means ONNX Runtime on CPU when it is installed, else
    TorchScript. ONNX Runtime serves on CPU only here (its CUDA build is another package)."""
    if requested == "auto":
        if device.type == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
            return "onnxruntime"
        return "torchscript"
    if requested == "onnxruntime" and device.type != "cpu":
        raise ValueError(f"runtime onnxruntime serves on CPU only; on {device} use torchscript or eager")
    if requested not in RUNTIMES:
        raise ValueError(f"unknown runtime {requested!r}; one of auto, {', '.join(RUNTIMES)}")
    return requested  # type: ignore[return-value]


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
    import onnxruntime as ort

    with torch.no_grad():
        outputs = module(example)
    names = [f"output{i}" for i in range(len(outputs) if isinstance(outputs, tuple) else 1)]
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings; the legacy exporter's deprecation notice
        torch.onnx.export(
            module,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript-based exporter writes to file objects too
            input_names=["input"],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in ["input", *names]},
            opset_version=17,
            dynamo=False,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    single = len(names) == 1

    def run(x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = [torch.from_numpy(a) for a in session.run(None, {"input": x.contiguous().numpy()})]
        return out[0] if single else tuple(out)

    return run


def _assert_close(eager: object, traced: object) -> None:
    expected = eager if isinstance(eager, tuple) else (eager,)
    actual = traced if isinstance(traced, tuple) else (traced,)
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-4)


def _answers(logits: torch.Tensor, calibration: Calibration) -> tuple[list[list[float]], list[float], list[bool]]:
    """Per row: calibrated probabilities, digit score, verdict (as Python lists, for the responses)."""
    logits = logits.float().cpu()
    scores = calibration.scores(logits)
    return calibration.probabilities(logits).tolist(), scores.tolist(), calibration.is_digit(scores).tolist()


def predict_fn(
    runner: Runner, ckpt: LoadedCheckpoint, device: torch.device, dtype: torch.dtype
) -> Callable[[torch.Tensor], list[Prediction]]:
    in_chans, calibration = ckpt.meta.config.in_chans, ckpt.meta.calibration

    @torch.inference_mode()
    def run(x: torch.Tensor) -> list[Prediction]:
        logits = runner(match_channels(x.to(device, dtype), in_chans))
        assert isinstance(logits, torch.Tensor)
        return [Prediction(*answer) for answer in zip(*_answers(logits, calibration), strict=True)]

    return run


def attention_fn(
    runner: Runner, ckpt: LoadedCheckpoint, device: torch.device, dtype: torch.dtype
) -> Callable[[torch.Tensor], list[AttentionResult]]:
    config = ckpt.meta.config
    prefix = config.num_prefix_tokens

    @torch.inference_mode()
    def run(x: torch.Tensor) -> list[AttentionResult]:
        logits, attn = runner(match_channels(x.to(device, dtype), config.in_chans))
        attn = attn.float()
        probs, scores, verdicts = _answers(logits, ckpt.meta.calibration)
        rollout = attention_rollout(attn, prefix).cpu()
        layers = torch.stack([cls_attention(attn, layer, prefix) for layer in range(attn.shape[1])], dim=1).cpu()
        return [
            AttentionResult(probs[i], scores[i], verdicts[i], rollout[i], layers[i, -1].mean(0), layers[i])
            for i in range(x.shape[0])
        ]

    return run
