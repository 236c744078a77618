"""Serving on CPU from the ONNX export: torch never imported, the same answers as PyTorch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model import load_checkpoint
from model.factory import forward_with_attention
from model.preprocess import prepare_bytes
from model.rollout import attention_rollout, cls_attention
from tests.app.conftest import png_bytes, serve
from tests.conftest import ROOT, SHIPPED

pytestmark = pytest.mark.slow  # each test starts a server process


PNG = {"content-type": "image/png"}

# Runs in a fresh interpreter, so that sys.modules says what serving imported and nothing else.
SERVE_AND_LIST_MODULES = """
import json, sys, time
from fastapi.testclient import TestClient
from app.main import create_app
from app.settings import Settings

settings = Settings(checkpoints=[sys.argv[1]], device="cpu")
with TestClient(create_app(settings)) as client:
    while client.get("/readyz").status_code != 200:
        time.sleep(0.05)
    png = open(sys.argv[2], "rb").read()
    answers = [
        client.post("/v1/predict", content=png, headers={"content-type": "image/png"}).status_code,
        client.post("/v1/attention?layers=all", content=png, headers={"content-type": "image/png"}).status_code,
        client.post("/v1/attention?format=png", content=png, headers={"content-type": "image/png"}).status_code,
        client.get("/metrics").status_code,
    ]
    runtime = client.get("/v1/models").json()["models"][0]["runtime"]
print(json.dumps({"answers": answers, "runtime": runtime, "torch": "torch" in sys.modules}))
"""


def _mnist_pngs(mnist_root, n):
    from training.data import load_split

    test = load_split(mnist_root, train=False)
    return [png_bytes(test.images[i].numpy()) for i in range(n)], test.labels[:n].tolist()


def test_serving_the_onnx_export_never_imports_torch(tmp_path, digit_png):
    (tmp_path / "digit.png").write_bytes(digit_png)
    out = subprocess.run(
        [sys.executable, "-c", SERVE_AND_LIST_MODULES, str(SHIPPED), str(tmp_path / "digit.png")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"answers": [200, 200, 200, 200], "runtime": "onnxruntime", "torch": False}


def test_a_real_server_on_the_export_has_no_torch_library_mapped(digit_png):
    import httpx

    with serve(SHIPPED) as (base, proc):  # device cpu
        assert httpx.post(base + "/v1/predict", content=digit_png, headers=PNG).status_code == 200
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "onnxruntime" in maps
    assert "libtorch" not in maps


def test_attention_over_http_equals_the_pytorch_model(make_client, mnist_root):
    """The endpoint's answers (from the export) against the PyTorch checkpoint run by hand."""
    client = make_client(checkpoints=[SHIPPED])
    assert client.get("/v1/models").json()["models"][0]["served_from"] == "vit-digits.onnx"
    ckpt = load_checkpoint(SHIPPED)
    meta, prefix = ckpt.meta, ckpt.meta.config.num_prefix_tokens
    pngs, _ = _mnist_pngs(mnist_root, 8)
    for png in pngs:
        got = client.post("/v1/attention?layers=all", content=png, headers=PNG).json()
        x = prepare_bytes(png, meta.preprocess.mean, meta.preprocess.std, meta.preprocess.image_size).model_input
        with torch.no_grad():
            logits, attn = forward_with_attention(ckpt.model, torch.from_numpy(x[None]))
        # the JSON rounds maps to 5 decimals and probabilities to 6: both well inside 1e-4
        np.testing.assert_allclose(got["probabilities"], meta.calibration.probabilities(logits)[0], atol=1e-4)
        np.testing.assert_allclose(got["digit_score"], meta.calibration.scores(logits)[0], atol=1e-4)
        np.testing.assert_allclose(got["rollout"], attention_rollout(attn, prefix)[0], atol=1e-4)
        np.testing.assert_allclose(got["cls_attention"], cls_attention(attn, -1, prefix)[0].mean(0), atol=1e-4)
        for layer in got["layers"]:
            np.testing.assert_allclose(layer["heads"], cls_attention(attn, layer["layer"], prefix)[0], atol=1e-4)


def test_a_checkpoint_without_export_is_served_with_torch_and_a_warning_naming_the_export_command(
    make_client, tiny_checkpoint_without_export, digit_png, caplog
):
    client = make_client(checkpoints=[tiny_checkpoint_without_export])
    (m,) = client.get("/v1/models").json()["models"]
    assert (m["served_from"], m["runtime"]) == ("tiny.safetensors", "eager")
    assert client.post("/v1/predict", content=digit_png, headers=PNG).status_code == 200
    (warning,) = [
        r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "ONNX export" in r.getMessage()
    ]
    assert "served by torch on CPU" in warning
    assert f"python -m training export {tiny_checkpoint_without_export}" in warning


def test_a_stale_export_is_refused_with_the_command_that_fixes_it(make_client, tiny_checkpoint, tmp_path):
    from model import CheckpointMeta, build_model, save_checkpoint
    from tests.conftest import TINY

    (tmp_path / "tiny.onnx").write_bytes(tiny_checkpoint.with_suffix(".onnx").read_bytes())
    torch.manual_seed(5)  # a retrained checkpoint, the old export still next to it
    save_checkpoint(tmp_path / "tiny.safetensors", build_model(TINY), CheckpointMeta(TINY))
    client = make_client(checkpoints=[tmp_path], on_load_failure="stay", _no_wait=True)
    body = _failed_readiness(client)
    assert "tiny.onnx was exported from another checkpoint than tiny.safetensors" in body
    assert "python -m training export" in body and str(tmp_path) not in body  # no paths on /readyz


def test_an_efficient_attention_checkpoint_is_refused_by_name(make_client, tmp_path):
    from model import CheckpointMeta, build_model, save_checkpoint
    from tests.conftest import TINY

    config = TINY.replace(attention="linear", pool="mean")
    save_checkpoint(tmp_path / "linear.safetensors", build_model(config), CheckpointMeta(config))
    client = make_client(checkpoints=[tmp_path], on_load_failure="stay", _no_wait=True)
    body = _failed_readiness(client)
    assert "attention='linear' model, which has no attention maps to serve" in body


def test_an_export_alone_is_served(make_client, tiny_checkpoint, tmp_path, digit_png):
    (tmp_path / "solo.onnx").write_bytes(tiny_checkpoint.with_suffix(".onnx").read_bytes())
    client = make_client(checkpoints=[tmp_path / "solo.onnx"])
    (m,) = client.get("/v1/models").json()["models"]
    assert (m["id"], m["served_from"]) == ("solo", "solo.onnx")
    assert client.post("/v1/predict", content=digit_png, headers=PNG).status_code == 200


def test_shipped_export_is_the_shipped_checkpoint(mnist_root):
    """The committed export comes from the committed checkpoint and answers as it does on real digits
    (after changing the checkpoint: python -m training export checkpoints/vit-digits.safetensors)."""
    from model.onnx_model import load_onnx
    from training.data import load_split

    shipped, ckpt = load_onnx(SHIPPED.with_suffix(".onnx")), load_checkpoint(SHIPPED)
    assert shipped.checkpoint_sha256 == ckpt.sha256 and shipped.meta == ckpt.meta
    pre = ckpt.meta.preprocess
    images = load_split(mnist_root, train=False).images[:64].numpy().astype(np.float32) / 255
    x = ((images[:, None] - pre.mean[0]) / pre.std[0]).astype(np.float32)
    with torch.no_grad():
        logits, attn = forward_with_attention(ckpt.model, torch.from_numpy(x))
    got_logits, got_attn = shipped.logits_and_attention(x)
    np.testing.assert_allclose(got_logits, logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_attn, attn.numpy(), atol=1e-4, rtol=0)


def test_model_discovery_names_what_is_wrong(make_client, tiny_checkpoint, tmp_path):
    from app.registry import ModelLoadError, model_files

    with pytest.raises(ModelLoadError, match=r"model 'nope' cannot be served: nope.safetensors does not exist"):
        model_files([tmp_path / "nope.safetensors"])
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match=r"notes.txt is not a .safetensors or .onnx file"):
        model_files([tmp_path / "notes.txt"])
    # a typo in a named file does not quietly serve its sibling
    with pytest.raises(ModelLoadError, match=r"tiny\.safetensor does not exist"):
        model_files([tiny_checkpoint.with_suffix(".safetensor")])
    other = tmp_path / "other"
    other.mkdir()
    (other / "tiny.onnx").write_bytes(tiny_checkpoint.with_suffix(".onnx").read_bytes())
    with pytest.raises(ModelLoadError, match="model id 'tiny' is found in two folders"):
        model_files([tiny_checkpoint.parent, other])
    (files,) = model_files([tiny_checkpoint])  # a named file brings its export along
    assert (files.checkpoint, files.export) == (tiny_checkpoint, tiny_checkpoint.with_suffix(".onnx"))


def _failed_readiness(client) -> str:
    import time

    for _ in range(200):
        r = client.get("/readyz")
        if r.status_code == 503 and "cannot be served" in r.text:
            return r.text
        time.sleep(0.05)
    raise AssertionError(f"readiness never reported the failure: {r.text}")
