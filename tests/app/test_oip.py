"""The Open Inference Protocol's routes (/v2) in-process: JSON tensors, the protocol's error shape and
statuses, the API key, limits, deadlines and metrics shared with /v1. (Triton's own client against a
live server: test_oip_tritonclient.py.)"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.app.test_not_a_digit import _with_threshold

INFER = "/v2/models/tiny/infer"


def _json_pictures(pictures: list[bytes], **parameters: object) -> dict[str, object]:
    tensor = {
        "name": "image",
        "shape": [len(pictures)],
        "datatype": "BYTES",
        "parameters": {"content_type": "base64"},
        "data": [base64.b64encode(p).decode() for p in pictures],
    }
    return {"inputs": [tensor], **({"parameters": parameters} if parameters else {})}


def _binary(header: dict[str, object], data: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + data, {"Inference-Header-Content-Length": str(len(text)), "Content-Type": "application/octet-stream"}


def test_base64_pictures_in_json_answer_as_v1_does(client: TestClient, digit_png: bytes) -> None:
    answer = client.post(INFER, json=_json_pictures([digit_png, digit_png]))
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["model_name"] == "tiny" and len(body["model_version"]) == 12
    outputs = {output["name"]: output for output in body["outputs"]}
    assert list(outputs) == ["probabilities", "digit", "is_digit", "digit_score"]
    v1 = client.post("/v1/predict", content=digit_png, headers={"content-type": "image/png"}).json()
    assert outputs["probabilities"]["shape"] == [2, 10]
    np.testing.assert_allclose(outputs["probabilities"]["data"][:10], v1["probabilities"], atol=1e-6)
    assert outputs["digit"]["data"] == [v1["digit"]] * 2 and outputs["is_digit"]["data"] == [v1["is_digit"]] * 2


def test_plain_json_strings_are_the_pictures_utf8_bytes(client: TestClient) -> None:
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not a picture"]}
    answer = client.post(INFER, json={"inputs": [tensor]})
    assert answer.status_code == 400
    assert answer.json() == {"error": answer.json()["error"]} and "picture 0" in answer.json()["error"]


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"inputs": []}, "inputs: List should have at least 1 item"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, "unknown input 'x'"),
        ({"inputs": [{"name": "input", "shape": [1, 1, 28], "datatype": "FP32", "data": [1]}]}, "must be FP32"),
        ({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [1]}]}, "1 numbers"),
        ({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": ["1"] * 784}]}, "numbers"),
        ({"inputs": [{"name": "image", "shape": ["1"], "datatype": "BYTES", "data": []}]}, "inputs.0.shape.0"),
        ({"inputs": [{"name": "image", "shape": [0], "datatype": "BYTES", "data": []}]}, "between 1 and 64"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "extra": 1}, "extra"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}, "neither data nor binary_data_size"),
    ],
)
def test_bad_requests_are_400_saying_why(client: TestClient, request_body: dict[str, object], message: str) -> None:
    answer = client.post(INFER, json=request_body)
    assert answer.status_code == 400, answer.text
    assert list(answer.json()) == ["error"] and message in answer.json()["error"], answer.json()


def test_unknown_or_duplicate_outputs_are_400(client: TestClient, digit_png: bytes) -> None:
    for outputs in ([{"name": "logits"}], [{"name": "digit"}, {"name": "digit"}]):
        answer = client.post(INFER, json={**_json_pictures([digit_png]), "outputs": outputs})
        assert answer.status_code == 400, outputs


def test_binary_sections_must_add_up(client: TestClient, digit_png: bytes) -> None:
    image = {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 4 + len(digit_png)}}
    element = len(digit_png).to_bytes(4, "little") + digit_png
    body, headers = _binary({"inputs": [image]}, element)
    assert client.post(INFER, content=body, headers=headers).status_code == 200
    for extra, why in [(b"!", "belong to no input"), (b"", None)]:
        body, headers = _binary({"inputs": [image]}, element[:-1] + extra if why is None else element + extra)
        answer = client.post(INFER, content=body, headers=headers)
        assert answer.status_code == 400 and (why is None or why in answer.json()["error"]), answer.text
    headers["Inference-Header-Content-Length"] = str(len(body) + 1)
    assert client.post(INFER, content=body, headers=headers).status_code == 400


def test_non_finite_inputs_and_other_media_types_are_refused(client: TestClient) -> None:
    pixels = np.zeros((1, 1, 28, 28), "<f4")
    pixels[0, 0, 0, 0] = np.nan
    tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 3136}}
    body, headers = _binary({"inputs": [tensor]}, pixels.tobytes())
    answer = client.post(INFER, content=body, headers=headers)
    assert answer.status_code == 400 and "finite" in answer.json()["error"]
    answer = client.post(INFER, content=b"{}", headers={"content-type": "text/plain"})
    assert answer.status_code == 415 and answer.json()["error"].startswith("unsupported_media_type: ")


def test_binary_outputs_follow_the_json_header(client: TestClient, digit_png: bytes) -> None:
    outputs = [{"name": "digit", "parameters": {"binary_data": True}}, {"name": "digit_score"}]
    answer = client.post(INFER, json={**_json_pictures([digit_png]), "outputs": outputs})
    assert answer.headers["content-type"] == "application/octet-stream"
    length = int(answer.headers["inference-header-content-length"])
    header = json.loads(answer.content[:length])
    digit, score = header["outputs"]
    assert digit["parameters"] == {"binary_data_size": 8} and "data" not in digit
    assert len(score["data"]) == 1 and "parameters" not in score
    assert (
        int.from_bytes(answer.content[length:], "little")
        == client.post(INFER, json=_json_pictures([digit_png])).json()["outputs"][1]["data"][0]
    )


def test_reject_parameter_turns_a_non_digit_into_400(make_client, tiny_checkpoint: Path, tmp_path: Path, digit_png):
    strict = make_client(checkpoints=[_with_threshold(tiny_checkpoint, tmp_path, 1e6)])
    url = "/v2/models/judged/infer"
    assert strict.post(url, json=_json_pictures([digit_png])).json()["outputs"][2]["data"] == [False]
    answer = strict.post(url, json=_json_pictures([digit_png], reject=True))
    assert answer.status_code == 400 and answer.json()["error"].startswith("not_a_digit: picture 0: ")


def test_callers_timeout_parameter_shortens_the_deadline_to_504(client: TestClient, digit_png: bytes) -> None:
    answer = client.post(INFER, json=_json_pictures([digit_png], timeout=1))  # microseconds
    assert answer.status_code == 504 and answer.json()["error"].startswith("inference_timeout: ")


def test_api_key_guards_v2_but_its_health_checks(make_client) -> None:
    keyed = make_client(api_key="s3cret")
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert keyed.get(path).status_code == 200, path
    for path in ("/v2", "/v2/models/tiny", "/v2/models/tiny/ready"):
        answer = keyed.get(path)
        assert answer.status_code == 401 and answer.json() == {
            "error": "unauthorized: missing or wrong X-API-Key header"
        }
        assert keyed.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200, path
    assert keyed.post(INFER, json={}).status_code == 401
    assert keyed.get("/v1/models").json()["error"]["code"] == "unauthorized"  # /v1 keeps its shape
    paths = keyed.get("/openapi.json", headers={"X-API-Key": "s3cret"}).json()["paths"]
    assert "security" not in paths["/v2/health/ready"]["get"]
    assert paths["/v2/models/{name}/infer"]["post"]["security"] == [{"APIKeyHeader": []}]


def test_body_limit_and_unknown_paths_answer_in_the_protocols_shape(make_client, digit_png: bytes) -> None:
    small = make_client(max_upload_bytes=100)
    answer = small.post(INFER, json=_json_pictures([digit_png]))
    assert answer.status_code == 413 and answer.json()["error"].startswith("payload_too_large: ")
    answer = small.get("/v2/nowhere")
    assert answer.status_code == 404 and answer.json() == {"error": "not_found: Not Found"}


def test_v2_requests_are_counted_by_route_template(client: TestClient, digit_png: bytes) -> None:
    client.post(INFER, json=_json_pictures([digit_png]))
    client.get("/v2/models/tiny")
    metrics = client.get("/metrics").text
    assert 'route="/v2/models/{name}/infer",status="200"' in metrics
    assert 'route="/v2/models/{name}",status="200"' in metrics
    assert "tiny" not in "".join(line for line in metrics.splitlines() if "requests_total{" in line)


@pytest.mark.parametrize("timeout", ["NaN", "Infinity", "1" + "0" * 400])
def test_a_timeout_that_is_no_number_of_microseconds_is_400_and_costs_no_decoder(
    client: TestClient, digit_png: bytes, timeout: str
) -> None:
    # NaN once took a decoder process out of the pool for good: every later picture waited 10 s for 504
    body = json.dumps(_json_pictures([digit_png]))[:-1] + f', "parameters": {{"timeout": {timeout}}}}}'
    answer = client.post(INFER, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "timeout" in answer.json()["error"]
    assert client.post(INFER, json=_json_pictures([digit_png])).status_code == 200


@pytest.mark.parametrize("length", [b"\xb2", b"0" * 4400 + b"2"])  # a latin-1 superscript two; 4,401 digits
def test_a_header_length_that_is_no_ascii_length_is_400(client: TestClient, length: bytes) -> None:
    headers = {b"content-type": b"application/octet-stream", b"inference-header-content-length": length}
    answer = client.post(INFER, content=b"{}", headers=headers)
    assert answer.status_code == 400 and "Inference-Header-Content-Length" in answer.json()["error"]


def test_inputs_beyond_fp32_and_data_in_two_places_are_400(client: TestClient) -> None:
    values = [1e39] + [0.0] * 783
    tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": values}
    assert client.post(INFER, json={"inputs": [tensor]}).status_code == 400
    tensor = {**tensor, "data": [0.0] * 784, "parameters": {"binary_data_size": 3136}}
    body, headers = _binary({"inputs": [tensor]}, np.zeros(784, "<f4").tobytes())
    answer = client.post(INFER, content=body, headers=headers)
    assert answer.status_code == 400 and "one place" in answer.json()["error"]


def test_error_messages_clip_what_the_caller_sent(client: TestClient, digit_png: bytes) -> None:
    body = {**_json_pictures([digit_png]), "q" * 100_000: 1}
    answer = client.post(INFER, json=body)
    assert answer.status_code == 400 and len(answer.json()["error"]) < 300
