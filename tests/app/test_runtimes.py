"""The runtimes the service runs models with: each reproduces the eager model, or is not used."""

import pytest
import torch
from torch import nn

from app.torch_runtime import build_runner, resolve_runtime
from model import ViTConfig, build_model
from model.factory import WithAttention

OURS = ViTConfig(patch_size=4, dim=16, depth=2, heads=2, mlp_ratio=2.0, stem="conv")


@pytest.mark.parametrize("runtime", ["onnxruntime", "torchscript"])
@pytest.mark.parametrize(
    "config", [OURS, OURS.replace(impl="timm", stem="linear"), OURS.replace(impl="timm", stem="linear", in_chans=3)]
)
def test_compiled_runtimes_reproduce_eager_logits_and_attention_at_any_batch_size(runtime, config):
    torch.manual_seed(0)
    model = build_model(config).eval()
    example = torch.randn(4, config.in_chans, 28, 28)
    for module in (model, WithAttention(model)):
        runner, used = build_runner(module, example, runtime, threads=1)
        assert used == runtime
        for batch in (1, 7, 33):
            x = torch.randn(batch, config.in_chans, 28, 28)
            with torch.inference_mode():
                want, got = module(x), runner(x)
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)


class BatchDependent(nn.Module):
    """Python control flow on the batch size: a trace or an export bakes in the example's branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * 2 if x.shape[0] == 4 else x.flatten(1)


@pytest.mark.parametrize("runtime", ["onnxruntime", "torchscript"])
def test_a_runtime_that_gets_the_model_wrong_falls_back_to_eager(runtime):
    module = BatchDependent()
    runner, used = build_runner(module, torch.ones(4, 1, 2, 2), runtime, threads=1)
    assert used == "eager" and runner is module


def test_auto_runtime_is_onnxruntime_on_cpu_and_torchscript_on_cuda():
    assert resolve_runtime("auto", torch.device("cpu")) == "onnxruntime"
    assert resolve_runtime("auto", torch.device("cuda", 0)) == "torchscript"
    assert resolve_runtime("eager", torch.device("cuda", 0)) == "eager"


def test_onnxruntime_on_cuda_is_refused_with_the_alternatives():
    with pytest.raises(ValueError, match=r"CPU only.*torchscript or eager"):
        resolve_runtime("onnxruntime", torch.device("cuda"))
