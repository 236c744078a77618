import itertools
import json

import numpy as np
import pytest
import torch

from model import ViTConfig, build_model, load_checkpoint
from model.calibration import Calibration
from tests.conftest import MNIST_SLICE, ROOT
from training.cli import main
from training.data import Split
from training.pictures import (
    HELD_OUT_KINDS,
    KINDS,
    LETTERS,
    SCRIPT_LETTERS,
    STAGINGS,
    SYMBOLS,
    TRAIN_KINDS,
    build_set,
    digit_fonts,
    fonts,
    glyph_image,
    holding,
    non_digits,
    staged_digits,
    symbol_fonts,
)
from training.trust import DIGIT_FLAG_RATE, Scored, best_possible, recheck, scored


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # .cache/mnist and .cache/pictures land in the test's folder


def test_pictures_every_kind_drawn_deterministically_and_preprocessed_like_uploads():
    assert set(TRAIN_KINDS).isdisjoint(HELD_OUT_KINDS) and set(TRAIN_KINDS) | set(HELD_OUT_KINDS) == set(KINDS)
    first, again = non_digits(tuple(KINDS), 3, seed=7), non_digits(tuple(KINDS), 3, seed=7)
    assert [p.kind for p in first] == [k for k in KINDS for _ in range(3)]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(first, again, strict=True))
    other = non_digits(("letters",), 3, seed=8)
    assert not np.array_equal(np.asarray(first[0].image), np.asarray(other[0].image))
    built = build_set(first)
    assert built.images.shape[1:] == (28, 28) and built.images.dtype == np.uint8
    assert len(built.images) + sum(built.refused.values()) == len(first)
    assert (built.labels == -1).all()
    # cropped and centred as the service does: the ink's centre of mass near the middle
    mass = built.images.astype(np.float64)
    rows = (mass.sum(2) * np.arange(28)).sum(1) / mass.sum((1, 2))
    assert np.abs(rows - 14).mean() < 2


@pytest.mark.parametrize(
    ("faces", "glyphs"),
    [(fonts, LETTERS), (digit_fonts, "0123456789"), (symbol_fonts, SCRIPT_LETTERS)],
    ids=["letters", "digits", "script-letters"],
)
def test_every_typeface_draws_every_glyph_it_is_given(faces, glyphs):
    # DejaVu's "Display" faces hold no letters or digits: they drew blank pages, which counted as
    # refused typed digits and as flagged letters and symbols. A face without a glyph draws its
    # "missing glyph" box instead, which is no letter either.
    missing = [f"{face.name}:{g}" for face in faces() for g in glyphs if face not in holding(g, faces())]
    blank = [f"{face.name}:{g}" for face in faces() for g in glyphs if glyph_image(g, face).min() > 128]
    assert len(faces()) >= 10 and not missing and not blank


def test_every_symbol_is_drawn_only_in_faces_that_hold_it():
    # DejaVu's serif and oblique mono faces have no check mark, cross or star: the symbols set drew
    # their missing-glyph box in their place
    for glyph in SYMBOLS:
        assert len(holding(glyph, symbol_fonts())) >= 6, glyph
    serif = [face for face in symbol_fonts() if face.name.startswith("DejaVuSerif")]
    assert serif and not set(serif) & set(holding("✓", symbol_fonts()))


def test_staged_digits_keep_their_labels_and_every_staging():
    digits = np.zeros((len(STAGINGS), 28, 28), np.uint8)
    digits[:, 6:22, 12:16] = 255  # a "1"
    pictures = staged_digits(digits, np.ones(len(STAGINGS), np.int64), seed=0, typed=5)
    assert [p.kind for p in pictures[: len(STAGINGS)]] == list(STAGINGS)
    assert all(p.label == 1 for p in pictures[: len(STAGINGS)]) and all(0 <= p.label <= 9 for p in pictures)
    sizes = {p.image.size for p in pictures[1 : len(STAGINGS)]}
    assert max(s[0] for s in sizes) >= 96  # staged on canvases bigger than MNIST's 28 pixels


@pytest.mark.slow
def test_trust_command_fits_writes_and_reports(tiny_checkpoint, tmp_path, capsys):
    ckpt = tmp_path / "tiny.safetensors"
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    out = tmp_path / "report"
    args = ["trust", "--checkpoint", str(ckpt), "--data-dir", str(MNIST_SLICE), "--per-kind", "8", "--staged", "40"]
    assert main([*args, "--out-dir", str(out), "--write"]) == 0
    report = json.loads((out / "report.json").read_text())
    cal = load_checkpoint(ckpt).meta.calibration
    assert cal.threshold is not None and cal.temperature > 0
    assert report["calibration"]["threshold"] == pytest.approx(cal.threshold)
    assert set(report["nondigits_held_out"]) == {*HELD_OUT_KINDS, "all"}
    assert 0 <= report["auroc_held_out"]["all"] <= 1
    assert (out / "reliability.png").stat().st_size > 1000
    assert set(report["alternatives"]) == {"energy", "max_logit", "msp", "mahalanobis"}
    points = report["operating_points"]  # a stricter threshold flags more of both
    assert [p["validation_digits_flagged"] for p in points] == sorted(p["validation_digits_flagged"] for p in points)
    for looser, stricter in itertools.pairwise(points):
        assert stricter["threshold"] >= looser["threshold"]
        assert stricter["held_out_flagged"] >= looser["held_out_flagged"]
        assert stricter["mnist_test_flagged"] >= looser["mnist_test_flagged"]
        assert stricter["staged_test_flagged"] >= looser["staged_test_flagged"]
    assert 0 <= report["best_possible"]["held_out_flagged"] <= 1
    middle = next(p for p in points if p["validation_digits_flagged"] == DIGIT_FLAG_RATE)
    assert middle["threshold"] == pytest.approx(cal.threshold, abs=1e-5)
    printed = capsys.readouterr().out
    assert "expected calibration error, MNIST test" in printed and "held-out kind" in printed
    assert "`mahalanobis`" in printed
    # every figure but the feature-space alternative comes back from the per-picture records
    assert main(["trust", "--from-records", str(out)]) == 0
    assert "every figure recomputed equal" in capsys.readouterr().out
    report["staged_test"]["flagged"]["all"]["flagged"] += 0.01
    report["calibration"]["fitted"]["validation_auroc"]["energy"] += 0.01  # what the fit found, misreported
    (out / "report.json").write_text(json.dumps(report))
    assert recheck(out) == ["calibration", "staged_test"]


def test_the_committed_trust_report_comes_back_from_its_per_picture_records():
    """docs/results/trust is the shipped model's report (make trust); a reviewer recomputes it from
    the records with ``python -m training trust --from-records docs/results/trust``."""
    folder = ROOT / "docs" / "results" / "trust"
    assert recheck(folder) == []
    report = json.loads((folder / "report.json").read_text())
    assert report["drawn_with"]["per_kind"] == 500 and report["drawn_with"]["staged"] == 2000


@pytest.mark.parametrize("impl", ["ours", "timm"])
def test_the_features_are_the_heads_input_in_order_across_batches(impl):
    torch.manual_seed(0)
    model = build_model(ViTConfig(impl=impl, dim=32, depth=1, heads=2, mlp_ratio=2.0)).eval()
    split = Split(torch.randint(0, 256, (1500, 28, 28), dtype=torch.uint8), torch.zeros(1500, dtype=torch.long))
    s = scored(model, split, np.full(1500, "mnist"), {})  # two batches of predict()
    assert s.features.shape == (1500, 32)
    with torch.no_grad():
        assert torch.allclose(model.head(s.features), s.logits, atol=1e-5)


def test_best_possible_is_the_highest_threshold_that_keeps_each_digit_set_within_the_rate():
    def rows(top_logits, kinds="x", refused=None):
        logits = torch.zeros(len(top_logits), 10)
        logits[:, 0] = torch.tensor(top_logits, dtype=torch.float32)  # max_logit = these (all >= 0)
        return Scored(logits, torch.zeros(len(top_logits)), np.full(len(top_logits), kinds), refused or {}, logits)

    mnist = rows([float(v) for v in range(1, 101)])  # 1% of 100: one may be flagged, so below 2
    staged = rows([float(v) / 2 for v in range(1, 201)])  # 1% of 200: two may be, so below 1.5
    held_out = rows([0.2, 1.2, 1.4, 1.6, 50.0], kinds="symbols", refused={"near_empty": 5})
    best = best_possible(Calibration(1.0, "max_logit", 0.0), mnist, {"staged_test": staged, "held_out": held_out})
    assert best["threshold"] == 1.5
    assert best["held_out_flagged"] == (3 + 5) / 10  # three scored below it, and the refused pictures


def test_caller_stagings_draw_what_callers_send():
    from training.pictures import stage_digit

    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:17] = 255  # a thick "1"
    rng = np.random.default_rng(0)
    for _ in range(10):
        tight = np.asarray(stage_digit(digit, rng, "tight").convert("L")) < 128
        rows, cols = np.flatnonzero(tight.any(axis=1)), np.flatnonzero(tight.any(axis=0))
        margin = max(rows[0], tight.shape[0] - 1 - rows[-1], cols[0], tight.shape[1] - 1 - cols[-1])
        assert margin <= 0.05 * tight.shape[0] + 1  # the strokes run to the picture's edges
        tiny = stage_digit(digit, rng, "tiny")
        assert tiny.size[1] <= 24 or tiny.size[1] >= 32  # sent at 8-16 pixels (and a margin), or enlarged
    boxed = np.asarray(stage_digit(digit, np.random.default_rng(1), "boxed").convert("L"))
    assert ((boxed > 40) & (boxed < 200)).any()  # grey printed lines beside the black ink


@pytest.mark.parametrize("label", [1, 0, 8])
def test_a_neighbours_sliver_leaves_the_digit_whole(mnist_root, label):
    """The staged crop out of a number holds the whole digit, at the size it is drawn, and the sliver
    of its neighbour only beside it: no stroke of the digit is painted over."""
    from training.data import load_split
    from training.pictures import _glyph, stage_digit

    test = load_split(mnist_root, train=False)
    digits = test.images[test.labels == label][:20].numpy()
    rng = np.random.default_rng(0)
    for digit in digits:
        before = rng.bit_generator.state
        picture = np.asarray(stage_digit(digit, rng, "neighbour").convert("L"))
        rng_again = np.random.default_rng()
        rng_again.bit_generator.state = before
        height = int(rng_again.integers(60, 240))
        glyph = np.asarray(_glyph(digit, height)) > 128
        ink = picture < 128
        # the glyph's ink is somewhere in the picture, whole: it matches at its own rows and some column
        pad = (picture.shape[0] - glyph.shape[0]) // 2
        rows = ink[pad : pad + glyph.shape[0]]
        assert any(
            (rows[:, x : x + glyph.shape[1]] >= glyph).all() for x in range(rows.shape[1] - glyph.shape[1] + 1)
        ), f"a {label} lost some of its strokes"
