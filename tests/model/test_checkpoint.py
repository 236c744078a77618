import json
import struct

import pytest
import torch

from model import CheckpointError, CheckpointMeta, ViTConfig, build_model, load_checkpoint, read_meta, save_checkpoint

CFG = ViTConfig(patch_size=7, dim=16, depth=2, heads=2, stem="linear")


@pytest.mark.parametrize(
    "cfg",
    [
        CFG,
        CFG.replace(impl="timm"),
        ViTConfig(dim=16, depth=1, heads=2, stem="conv"),
        CFG.replace(distill_token=True),
    ],
)
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, cfg):
    model = build_model(cfg).eval()
    meta = CheckpointMeta(cfg, training={"test_accuracy": 0.99, "seed": 3})
    sha = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    assert loaded.sha256 == sha
    assert loaded.meta.config == cfg
    assert loaded.meta.training["seed"] == 3
    assert read_meta(tmp_path / "m.safetensors").labels == tuple("0123456789")


def test_checkpoint_truncated_file_is_named(tmp_path, tiny_checkpoint):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors"):
        load_checkpoint(bad)


def test_checkpoint_flipped_weight_bytes_are_detected(tmp_path, tiny_checkpoint):
    data = bytearray(tiny_checkpoint.read_bytes())
    data[-5] ^= 0xFF
    bad = tmp_path / "flip.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(bad)


def test_checkpoint_garbage_and_missing_files(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_checkpoint_foreign_safetensors_is_rejected(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a vit-digits checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_checkpoint_weights_that_do_not_fit_the_config(tmp_path, tiny_checkpoint):
    # rewrite the header so the config says dim=32 while the weights are for dim=16
    raw = tiny_checkpoint.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["meta"])
    meta["model"]["depth"] = 3
    header["__metadata__"]["meta"] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    (tmp_path / "mismatch.safetensors").write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    with pytest.raises(CheckpointError, match=r"missing: blocks\.2"):
        load_checkpoint(tmp_path / "mismatch.safetensors")


def test_checkpoint_newer_format_version_is_refused(tmp_path, tiny_checkpoint):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(tiny_checkpoint), "pt") as fh:
        metadata = dict(fh.metadata())
    metadata["format_version"] = "99"
    save_file(load_file(str(tiny_checkpoint)), str(tmp_path / "new.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="version '99' is not supported"):
        load_checkpoint(tmp_path / "new.safetensors")


def test_checkpoint_label_count_must_match(tmp_path):
    with pytest.raises(CheckpointError, match="labels"):
        save_checkpoint(tmp_path / "x.safetensors", build_model(CFG), CheckpointMeta(CFG, labels=("a", "b")))


def test_checkpoint_meta_replicates_grey_normalisation_for_rgb_models_and_refuses_a_mismatch():
    rgb = CFG.replace(in_chans=3)
    assert CheckpointMeta(rgb).preprocess.mean == (0.1307,) * 3
    from model.meta import Preprocessing

    with pytest.raises(CheckpointError, match="normalises 2 channels"):
        CheckpointMeta(rgb, preprocess=Preprocessing(28, (0.1, 0.2), (0.3, 0.3)))
