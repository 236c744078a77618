import io
import json

import numpy as np
from PIL import Image

from tests.conftest import MNIST_SLICE
from training.cli import main
from training.data import load_split


def test_evaluate_writes_report_confusion_and_error_grid(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tiny_checkpoint),
                "--data-dir",
                str(MNIST_SLICE),
                "--out-dir",
                str(out),
                "--device",
                "cpu",
                "--attention-figure",
                str(out / "attention.png"),
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 500
    assert sum(map(sum, report["confusion_matrix"])) == 500
    assert set(report["per_class"]) == set("0123456789")
    for name in ("confusion.png", "misclassified.png", "attention.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "test accuracy" in capsys.readouterr().out


def test_evaluate_folder_of_images_uses_parent_folder_labels(tmp_path, tiny_checkpoint, mnist_root, capsys):
    test = load_split(mnist_root, train=False)
    for i in range(4):
        folder = tmp_path / "imgs" / str(int(test.labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(255 - test.images[i].numpy()).save(buf, "PNG")  # dark ink on white paper
        (folder / f"{i}.png").write_bytes(buf.getvalue())
    (tmp_path / "imgs" / "blank.png").write_bytes(_blank_png())
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--images", str(tmp_path / "imgs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(entries) == 5
    assert any("error" in e for e in entries)
    assert lines[-1].startswith("accuracy") and "on 4 labelled images" in lines[-1]


def _blank_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 20), 255, np.uint8)).save(buf, "PNG")
    return buf.getvalue()
