import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from model import CheckpointMeta, build_model, load_checkpoint, save_checkpoint
from model.calibration import Calibration, digit_scores
from model.checkpoint import CheckpointError, read_meta
from tests.conftest import TINY


def test_calibration_default_leaves_softmax_and_calls_everything_a_digit():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    cal = Calibration()
    torch.testing.assert_close(torch.from_numpy(cal.probabilities(logits)), logits.softmax(-1))
    assert cal.is_digit(cal.scores(logits)).tolist() == [True, True]


def test_calibration_temperature_softens_and_threshold_decides():
    logits = torch.tensor([[4.0, 0.0], [0.1, 0.0]])
    cal = Calibration(temperature=2.0, score="energy", threshold=2.0)
    torch.testing.assert_close(torch.from_numpy(cal.probabilities(logits)), (logits / 2).softmax(-1))
    scores = cal.scores(logits)
    torch.testing.assert_close(torch.from_numpy(scores), torch.logsumexp(logits, -1))  # energy uses the raw logits
    assert cal.is_digit(scores).tolist() == [True, False]


def test_digit_scores_by_kind():
    logits = torch.tensor([[3.0, 1.0, 0.0]])
    assert digit_scores(logits, "max_logit").item() == 3.0
    assert digit_scores(logits, "msp", temperature=1.0).item() == pytest.approx(logits.softmax(-1).max().item())


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0.0}, {"temperature": float("nan")}, {"score": "vibes"}, {"threshold": float("inf")}]
)
def test_calibration_rejects_nonsense(kwargs):
    with pytest.raises(ValueError, match="calibration"):
        Calibration(**kwargs)


def test_checkpoint_round_trips_calibration(tmp_path):
    cal = Calibration(temperature=0.7, score="max_logit", threshold=5.5, fitted={"on": "validation"})
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, build_model(TINY), CheckpointMeta(TINY, calibration=cal))
    assert load_checkpoint(path).meta.calibration == cal
    old = tmp_path / "old.safetensors"  # written before calibration existed: no verdict, plain softmax
    save_checkpoint(old, build_model(TINY), CheckpointMeta(TINY))
    assert read_meta(old).calibration == Calibration()


def test_checkpoint_with_invalid_calibration_is_refused_by_name(tmp_path):
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, build_model(TINY), CheckpointMeta(TINY))
    with safe_open(str(good), framework="pt") as fh:
        metadata = fh.metadata()
    payload = json.loads(metadata["meta"]) | {"calibration": {"temperature": -1}}
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(good), bad, metadata={**metadata, "meta": json.dumps(payload)})
    with pytest.raises(CheckpointError, match="temperature"):
        load_checkpoint(bad)
