"""One artifact per device: on CPU the ONNX export run by ONNX Runtime, on CUDA the checkpoint run by
torch; a checkpoint without an export is served by torch on CPU with a warning, or refused with the
command that makes the export where torch is not installed."""

import sys

import numpy as np
import pytest
import torch

from app.registry import ModelLoadError, load_models
from app.settings import Settings

PNG = {"content-type": "image/png"}


def test_the_export_and_the_checkpoint_give_the_same_answers(make_client, tiny_checkpoint_without_export, digit_png):
    exported = make_client()
    checkpoint = make_client(checkpoints=[tiny_checkpoint_without_export])
    runtimes = [c.get("/v1/models").json()["models"][0]["runtime"] for c in (exported, checkpoint)]
    assert runtimes == ["onnxruntime", "eager"]
    for path in ("/v1/attention", "/v1/predict"):
        got = exported.post(path, content=digit_png, headers=PNG).json()
        want = checkpoint.post(path, content=digit_png, headers=PNG).json()
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-4)
        if path == "/v1/attention":
            np.testing.assert_allclose(got["rollout"], want["rollout"], atol=1e-4)


def test_a_checkpoint_without_export_where_torch_is_missing_is_refused_with_the_export_command(
    tiny_checkpoint_without_export, monkeypatch
):
    monkeypatch.setitem(sys.modules, "torch", None)  # importlib.util.find_spec("torch") is None
    with pytest.raises(ModelLoadError) as refused:
        load_models(Settings(checkpoints=[tiny_checkpoint_without_export], device="cpu"))
    message = str(refused.value)
    assert "has no ONNX export next to it, and torch is not installed" in message
    assert "python -m training export tiny.safetensors" in message and "make export" in message
    assert str(tiny_checkpoint_without_export.parent) not in message  # /readyz shows no paths


def test_an_export_alone_is_refused_on_cuda_with_what_to_do(tiny_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "solo.onnx").write_bytes(tiny_checkpoint.with_suffix(".onnx").read_bytes())
    monkeypatch.setattr("app.registry.serving_device", lambda requested: "cuda:0")
    with pytest.raises(
        ModelLoadError, match=r"solo.onnx is an ONNX export, which serves on CPU only; .*solo.safetensors"
    ):
        load_models(Settings(checkpoints=[tmp_path], device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_serves_the_checkpoint_with_torch_in_half_precision(make_client, digit_png):
    cuda, cpu = make_client(device="cuda", half=True), make_client()
    (m,) = cuda.get("/v1/models").json()["models"]
    assert m["device"].startswith("cuda") and (m["dtype"], m["runtime"]) == ("float16", "eager")
    assert m["served_from"] == "tiny.safetensors"
    got = cuda.post("/v1/predict", content=digit_png, headers=PNG).json()
    want = cpu.post("/v1/predict", content=digit_png, headers=PNG).json()
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-2)
