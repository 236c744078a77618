import io
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY

PNG = {"content-type": "image/png"}


def test_attention_json_maps(client, digit_png):
    r = client.post("/v1/attention", content=digit_png, headers=PNG)
    assert r.status_code == 200
    body = r.json()
    g = TINY.grid_size
    assert body["grid"] == g
    assert np.array(body["rollout"]).shape == (g, g) and abs(np.sum(body["rollout"]) - 1) < 1e-3
    assert np.array(body["cls_attention"]).shape == (g, g) and abs(np.sum(body["cls_attention"]) - 1) < 1e-3
    assert np.array(body["input"]).shape == (28, 28)
    assert body["layers"] is None
    predicted = client.post("/v1/predict", content=digit_png, headers=PNG).json()
    np.testing.assert_allclose(body["probabilities"], predicted["probabilities"], atol=1e-4)


def test_attention_all_layers_and_heads(client, digit_png):
    body = client.post("/v1/attention?layers=all", content=digit_png, headers=PNG).json()
    assert [layer["layer"] for layer in body["layers"]] == list(range(TINY.depth))
    assert np.array(body["layers"][0]["heads"]).shape == (TINY.heads, TINY.grid_size, TINY.grid_size)


def test_attention_png_heatmap(client, digit_png):
    for which in ("rollout", "cls"):
        r = client.post(f"/v1/attention?format=png&map={which}", content=digit_png, headers=PNG)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(r.content))
        assert image.size == (280, 280) and image.mode == "RGB"


def test_models_lists_what_is_loaded(client, tiny_checkpoint):
    body = client.get("/v1/models").json()
    assert body["default"] == "tiny"
    (m,) = body["models"]
    assert m["id"] == "tiny" and m["default"] and m["config"]["dim"] == TINY.dim
    assert m["parameters"] > 0 and m["device"] == "cpu" and len(m["sha256"]) == 64
    assert m["test_accuracy"] == 0.1 and m["trained_at"] == "2026-01-01"


def test_several_models_and_per_request_selection(make_client, tiny_checkpoint, tmp_path, digit_png):
    from model import CheckpointMeta, build_model, save_checkpoint

    torch.manual_seed(1)
    other = TINY.replace(depth=1)
    save_checkpoint(tmp_path / "other.safetensors", build_model(other), CheckpointMeta(other))
    client = make_client(checkpoints=[tiny_checkpoint, tmp_path], default_model="other")
    body = client.get("/v1/models").json()
    assert body["default"] == "other" and {m["id"] for m in body["models"]} == {"tiny", "other"}
    a = client.post("/v1/predict", content=digit_png, headers=PNG).json()
    b = client.post("/v1/predict?model=tiny", content=digit_png, headers=PNG).json()
    assert (a["model_id"], b["model_id"]) == ("other", "tiny")
    assert a["probabilities"] != b["probabilities"]


def test_readyz_reports_why_loading_failed(make_client, tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"garbage")
    client = make_client(checkpoints=[tmp_path / "broken.safetensors"], on_load_failure="stay", _no_wait=True)
    for _ in range(100):
        r = client.get("/readyz")
        if "failed" in r.text:
            break
        time.sleep(0.05)
    message = r.json()["error"]["message"]
    assert r.status_code == 503 and "model loading failed" in message and "'broken'" in message
    assert str(tmp_path) not in message  # the model id, never a path on the server
    assert r.headers["Retry-After"] == "2"  # a caller's retry waits as long as a model takes to load
    assert client.get("/healthz").status_code == 200
    refused = client.post("/v1/predict", content=b"x", headers=PNG)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"


def test_load_before_listen_is_ready_as_soon_as_started(make_client, tmp_path):
    client = make_client(load_before_listen=True, _no_wait=True)
    assert client.get("/readyz").status_code == 200  # the lifespan's startup waited for the models
    (tmp_path / "broken.safetensors").write_bytes(b"garbage")
    broken = make_client(
        checkpoints=[tmp_path / "broken.safetensors"], load_before_listen=True, on_load_failure="stay", _no_wait=True
    )
    assert "model loading failed" in broken.get("/readyz").json()["error"]["message"]  # reported, not raised


def test_api_key_protects_v1_only(make_client, digit_png):
    client = make_client(api_key="s3cret")
    r = client.post("/v1/predict", content=digit_png, headers=PNG)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert client.post("/v1/predict", content=digit_png, headers={**PNG, "X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/predict", content=digit_png, headers={**PNG, "X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
    assert 'route="/v1/predict",status="401"} 2.0' in client.get("/metrics").text  # counted, with a request id
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert spec["paths"]["/v1/predict"]["post"]["security"] == [{"APIKeyHeader": []}]
    assert "401" in spec["paths"]["/v1/models"]["get"]["responses"]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_cors_preflight_needs_no_api_key(make_client):
    client = make_client(api_key="s3cret", cors_origins=["https://example.org"])
    r = client.options(
        "/v1/predict", headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://example.org"


def test_cors_is_configurable(make_client):
    client = make_client(cors_origins=["https://example.org"])
    r = client.options(
        "/v1/predict", headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    )
    assert r.headers["access-control-allow-origin"] == "https://example.org"
    plain = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_metrics_exposes_requests_latency_batches_queue(client, digit_png):
    client.post("/v1/predict", content=digit_png, headers=PNG)
    client.post("/v1/predict", content=b"", headers=PNG)
    text = client.get("/metrics").text
    assert 'vit_digits_requests_total{method="POST",route="/v1/predict",status="200"} 1.0' in text
    assert 'vit_digits_requests_total{method="POST",route="/v1/predict",status="400"} 1.0' in text
    for name in (
        "vit_digits_request_seconds_bucket",
        "vit_digits_batch_size_bucket",
        "vit_digits_queue_depth",
        "vit_digits_inference_seconds_bucket",
    ):
        assert name in text


def test_metrics_method_label_takes_standard_methods_and_other(client):
    for method in ("BREW", "XYZZY1", "GETT"):  # made-up methods: h11 and httptools pass them on
        assert client.request(method, "/healthz").status_code == 405
    client.request("PATCH", "/healthz")
    text = client.get("/metrics").text
    methods = set(re.findall(r'vit_digits_requests_total\{method="([^"]+)"', text))
    assert methods == {"GET", "PATCH", "other"}
    assert 'vit_digits_requests_total{method="other",route="/healthz",status="405"} 3.0' in text


def test_an_unhandled_error_is_a_500_with_the_request_id_and_security_headers(client, digit_png, monkeypatch):
    from app.api.routes import predict

    async def broken(*_: object) -> None:
        raise RuntimeError("a fault of ours")

    monkeypatch.setattr(predict, "classify", broken)
    r = client.post("/v1/predict", content=digit_png, headers={**PNG, "X-Request-ID": "caller-42"})
    assert r.status_code == 500
    assert r.json() == {
        "error": {
            "code": "internal_error",
            "message": "an unexpected error occurred; it has been logged",
            "request_id": "caller-42",
        }
    }
    assert r.headers["x-request-id"] == "caller-42"
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert (
        r.headers["referrer-policy"] == "no-referrer" and "default-src 'none'" in r.headers["content-security-policy"]
    )
    assert 'route="/v1/predict",status="500"} 1.0' in client.get("/metrics").text


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/batch", "/v1/attention", "/v1/models", "/healthz", "/readyz"} <= set(
        spec["paths"]
    )
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/png" in body
    assert body["multipart/form-data"]["schema"]["additionalProperties"] is False
    batch = spec["paths"]["/v1/predict/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert batch["properties"]["files"]["minItems"] == 1 and batch["properties"]["files"]["maxItems"] == 64
    operations = [op for path, ops in spec["paths"].items() if path.startswith("/v1/") for op in ops.values()]
    assert not any("security" in op or "401" in op["responses"] for op in operations)  # no key: no 401
    assert "APIKeyHeader" not in spec.get("components", {}).get("securitySchemes", {})
    assert "503" in spec["paths"]["/v1/models"]["get"]["responses"]


def test_auto_device_is_the_cpu_without_asking_torch_where_no_nvidia_driver_is_loaded(
    make_client, tmp_path, monkeypatch
):
    from app.registry import serving_device

    def ask_torch(name: str) -> None:
        raise AssertionError("torch was asked (and imported) to learn there is no GPU")

    monkeypatch.setattr("app.registry.NVIDIA_DRIVER", tmp_path / "no-driver")
    monkeypatch.setattr("model.device.resolve_device", ask_torch)
    assert serving_device("auto") == "cpu"
    (m,) = make_client(device="auto").get("/v1/models").json()["models"]
    assert (m["device"], m["runtime"]) == ("cpu", "onnxruntime")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a CUDA device")
def test_cuda_requested_without_gpu_is_a_clear_readiness_error(make_client):
    client = make_client(device="cuda", on_load_failure="stay", _no_wait=True)
    for _ in range(100):
        if "failed" in (r := client.get("/readyz")).text:
            break
        time.sleep(0.05)
    assert "CUDA is not available" in r.json()["error"]["message"]
