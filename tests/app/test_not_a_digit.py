"""The is_digit verdict and ?reject over HTTP, with a checkpoint whose threshold is set by hand
(so the plumbing is tested apart from any model's judgement; the shipped model's judgement is
tested in test_shipped_http.py)."""

import dataclasses
from pathlib import Path

import pytest

from model import load_checkpoint, save_checkpoint
from model.calibration import Calibration

PNG = {"content-type": "image/png"}


def _with_threshold(tiny_checkpoint: Path, folder: Path, threshold: float) -> Path:
    ckpt = load_checkpoint(tiny_checkpoint)
    path = folder / "judged.safetensors"
    cal = Calibration(temperature=2.0, score="energy", threshold=threshold)
    save_checkpoint(path, ckpt.model, dataclasses.replace(ckpt.meta, calibration=cal))
    return path


@pytest.fixture
def strict_client(make_client, tiny_checkpoint, tmp_path):
    """Every picture scores below this threshold: nothing is a digit."""
    return make_client(checkpoints=[_with_threshold(tiny_checkpoint, tmp_path, 1e6)])


def test_uncalibrated_checkpoint_calls_everything_a_digit(client, digit_png):
    body = client.post("/v1/predict?reject=true", content=digit_png, headers=PNG).json()
    assert body["is_digit"] is True and isinstance(body["digit_score"], float)
    assert client.get("/v1/models").json()["models"][0]["calibration"] == {
        "temperature": 1.0,
        "score": "energy",
        "threshold": None,
    }


def test_verdict_and_calibrated_probabilities_come_from_the_checkpoint(
    make_client, tiny_checkpoint, tmp_path, digit_png
):
    plain = make_client().post("/v1/predict", content=digit_png, headers=PNG).json()
    lenient = make_client(checkpoints=[_with_threshold(tiny_checkpoint, tmp_path, -1e6)])
    body = lenient.post("/v1/predict", content=digit_png, headers=PNG).json()
    assert body["is_digit"] is True and body["digit_score"] == pytest.approx(plain["digit_score"], abs=1e-4)
    # temperature 2 flattens the distribution: the top probability drops, the ranking stays
    assert body["digit"] == plain["digit"] and body["confidence"] < plain["confidence"]
    models = lenient.get("/v1/models").json()["models"][0]
    assert models["calibration"]["temperature"] == 2.0 and models["calibration"]["threshold"] == -1e6


def test_not_a_digit_is_reported_then_rejected_on_request(strict_client, digit_png):
    body = strict_client.post("/v1/predict", content=digit_png, headers=PNG).json()
    assert body["is_digit"] is False and body["digit_score"] < 1e6
    r = strict_client.post("/v1/predict?reject=true", content=digit_png, headers=PNG)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "not_a_digit" and "threshold" in error["message"] and error["request_id"]
    r = strict_client.post("/v1/attention?reject=true", content=digit_png, headers=PNG)
    assert r.status_code == 422 and r.json()["error"]["code"] == "not_a_digit"
    heat = strict_client.post("/v1/attention?format=png", content=digit_png, headers=PNG)
    assert heat.headers["content-type"] == "image/png" and heat.headers["x-is-digit"] == "false"
    assert float(heat.headers["x-digit-score"]) < 1e6
    attention = strict_client.post("/v1/attention", content=digit_png, headers=PNG).json()
    assert attention["is_digit"] is False and len(attention["rollout"]) == 4  # the tiny model: patch 7


def test_batch_gives_each_non_digit_its_own_error_entry(strict_client, digit_png):
    files = [("files", ("a.png", digit_png, "image/png")), ("files", ("b.png", b"junk", "image/png"))]
    results = strict_client.post("/v1/predict/batch?reject=true", files=files).json()["results"]
    assert [r["error"]["code"] for r in results] == ["not_a_digit", "unsupported_format"]
    results = strict_client.post("/v1/predict/batch", files=files).json()["results"]
    assert results[0]["prediction"]["is_digit"] is False


def test_server_wide_reject_default_and_per_request_override(make_client, tiny_checkpoint, tmp_path, digit_png):
    client = make_client(checkpoints=[_with_threshold(tiny_checkpoint, tmp_path, 1e6)], reject_non_digits=True)
    assert client.post("/v1/predict", content=digit_png, headers=PNG).status_code == 422
    r = client.post("/v1/predict?reject=false", content=digit_png, headers=PNG)
    assert r.status_code == 200 and r.json()["is_digit"] is False
