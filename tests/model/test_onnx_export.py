"""The ONNX serving artifact: written from a checkpoint, equal to PyTorch, refused when damaged."""

import json
import shutil

import numpy as np
import pytest
import torch

from model import ViTConfig, build_model, load_checkpoint
from model.checkpoint import CheckpointMeta, save_checkpoint
from model.factory import forward_with_attention
from model.meta import CheckpointError
from model.onnx_export import export_onnx
from model.onnx_model import load_onnx, probe_input
from tests.conftest import TINY


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        TINY.replace(pool="mean", pos_embed="sincos2d"),
        TINY.replace(distill_token=True),
        ViTConfig(patch_size=7, dim=16, depth=2, heads=2, mlp_ratio=2.0, impl="timm", in_chans=3),
    ],
    ids=["ours-cls", "ours-mean", "ours-distill-token", "timm-rgb"],
)
def test_export_reproduces_pytorch_logits_and_attention_at_any_batch_size(tmp_path, config):
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, build_model(config), CheckpointMeta(config))
    ckpt = load_checkpoint(path)
    report = export_onnx(ckpt)
    assert report.path == tmp_path / "m.onnx"
    exported = load_onnx(report.path)
    for batch in (1, 3, 17):
        x = np.random.default_rng(batch).standard_normal((batch, config.in_chans, 28, 28), dtype=np.float32)
        with torch.no_grad():
            logits, attn = forward_with_attention(ckpt.model, torch.from_numpy(x))
        got_logits, got_attn = exported.logits_and_attention(x)
        np.testing.assert_allclose(got_logits, logits.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_attn, attn.numpy(), atol=1e-4, rtol=0)
        assert got_attn.shape == (batch, config.depth, config.heads, attn.shape[-1], attn.shape[-1])


def test_export_carries_the_checkpoint_metadata_and_digest(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    exported = load_onnx(tiny_checkpoint.with_suffix(".onnx"))
    assert exported.meta == ckpt.meta  # config, preprocessing, labels, training, calibration
    assert exported.checkpoint_sha256 == ckpt.sha256
    assert exported.parameters == sum(p.numel() for p in ckpt.model.parameters())


def _copy(tiny_checkpoint, tmp_path):
    path = tmp_path / "copy.onnx"
    shutil.copyfile(tiny_checkpoint.with_suffix(".onnx"), path)
    return path


def test_truncated_export_is_refused_by_name(tiny_checkpoint, tmp_path):
    path = _copy(tiny_checkpoint, tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"copy\.onnx: not a readable ONNX model \(truncated or corrupted"):
        load_onnx(path)


def test_damaged_weights_are_caught_by_the_probe(tiny_checkpoint, tmp_path):
    import onnx

    path = _copy(tiny_checkpoint, tmp_path)
    data = bytearray(path.read_bytes())
    largest = max(onnx.load(path).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    start = data.find(largest)  # where that weight's bytes sit in the file
    assert start > 0
    for i in range(start, start + 64):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"copy\.onnx: the graph's outputs differ .* \(corrupted weights\?\)"):
        load_onnx(path)


def test_foreign_onnx_model_is_refused_by_name(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])],
        "foreign",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(CheckpointError, match="not a vit-digits ONNX export"):
        load_onnx(path)


def test_newer_format_and_bad_metadata_are_refused(tiny_checkpoint, tmp_path):
    import onnx

    proto = onnx.load(tiny_checkpoint.with_suffix(".onnx"))
    props = {p.key: p for p in proto.metadata_props}
    props["format_version"].value = "99"
    onnx.save(proto, tmp_path / "newer.onnx")
    with pytest.raises(CheckpointError, match="version '99' is not supported"):
        load_onnx(tmp_path / "newer.onnx")
    props["format_version"].value = "1"
    meta = json.loads(props["meta"].value)
    props["meta"].value = json.dumps(meta | {"checkpoint_sha256": ""})
    onnx.save(proto, tmp_path / "nodigest.onnx")
    with pytest.raises(CheckpointError, match="no valid checkpoint_sha256"):
        load_onnx(tmp_path / "nodigest.onnx")
    meta["model"]["heads"] = 3  # 16 is not divisible by 3
    props["meta"].value = json.dumps(meta)
    onnx.save(proto, tmp_path / "badmeta.onnx")
    with pytest.raises(CheckpointError, match="invalid model metadata"):
        load_onnx(tmp_path / "badmeta.onnx")


def test_onnx_runtime_sends_and_stores_no_telemetry(tiny_checkpoint, tmp_path):
    """ORT's telemetry (on by default) writes a device id under $HOME/.cache; loading an export must not."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = "import sys; from model.onnx_model import load_onnx; load_onnx(sys.argv[1])"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORT_")} | {"HOME": str(tmp_path)}
    subprocess.run(
        [sys.executable, "-c", code, str(tiny_checkpoint.with_suffix(".onnx"))], cwd=ROOT, env=env, check=True
    )
    assert not list(tmp_path.rglob("*")), "ONNX Runtime wrote under $HOME"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such ONNX file"):
        load_onnx(tmp_path / "nothing.onnx")


def test_probe_input_is_fixed():
    a, b = probe_input(1, 28), probe_input(1, 28)
    assert a.shape == (2, 1, 28, 28) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])
