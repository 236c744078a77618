"""The Open Inference Protocol (/v2) as Triton's own client speaks it, against a live ``python -m app``:
JSON and binary tensors, both inputs, a batch of 64, errors, back-pressure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from model.preprocess import prepare_bytes
from tests.app.conftest import png_bytes, serve

pytestmark = pytest.mark.slow  # each test starts a server process


MODEL = "tiny"  # the tiny checkpoint's id: its file stem
BATCH = 64


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path) -> Iterator[str]:
    """The service with its default limits (a batch of 64 FP32 inputs is 200 kB)."""
    with serve(tiny_checkpoint) as (base, _):
        yield base


@pytest.fixture(scope="module")
def triton_client(server: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def pictures(mnist_root: Path) -> list[bytes]:
    from training.data import load_split

    images = load_split(mnist_root, train=False).images[:BATCH]
    return [png_bytes(image.numpy()) for image in images]


def _v1_probabilities(server: str, pictures: list[bytes]) -> np.ndarray:
    with httpx.Client(base_url=server) as client:
        answers = [client.post("/v1/predict", content=p, headers={"content-type": "image/png"}) for p in pictures]
    return np.array([answer.json()["probabilities"] for answer in answers])


def _images(pictures: list[bytes], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("image", [len(pictures)], "BYTES")
    return tensor.set_data_from_numpy(np.array(pictures, dtype=np.object_), binary_data=binary)


def _inputs(pictures: list[bytes], binary: bool) -> triton.InferInput:
    x = np.stack([prepare_bytes(p).model_input for p in pictures]).astype(np.float32)
    return triton.InferInput("input", list(x.shape), "FP32").set_data_from_numpy(x, binary_data=binary)


def test_health_and_metadata_name_the_model_as_triton_does(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]
    metadata = triton_client.get_model_metadata(MODEL)
    assert metadata["platform"] == "onnxruntime_onnx"
    (version,) = metadata["versions"]
    assert triton_client.is_model_ready(MODEL, version) and triton_client.is_model_ready(MODEL)
    assert not triton_client.is_model_ready(MODEL, "0")
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in metadata["inputs"]}
    assert inputs == {"image": ("BYTES", [-1]), "input": ("FP32", [-1, 1, 28, 28])}
    (pixels,) = (t for t in metadata["inputs"] if t["name"] == "input")
    assert (float(pixels["parameters"]["mean"]), float(pixels["parameters"]["std"])) == (0.1307, 0.3081)
    outputs = {t["name"]: t["datatype"] for t in metadata["outputs"]}
    assert outputs == {
        "probabilities": "FP32",
        "digit": "INT64",
        "is_digit": "BOOL",
        "digit_score": "FP32",
        "attention": "FP32",
    }


def test_binary_pictures_batch_of_64_answer_as_v1_does(
    triton_client: triton.InferenceServerClient, server: str, pictures: list[bytes]
) -> None:
    result = triton_client.infer(MODEL, [_images(pictures)])
    expected = _v1_probabilities(server, pictures)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (BATCH, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)  # /v1 rounds to 6 decimals
    np.testing.assert_array_equal(result.as_numpy("digit"), expected.argmax(axis=1))
    assert result.as_numpy("digit").dtype == np.int64 and result.as_numpy("is_digit").dtype == np.bool_
    assert result.as_numpy("digit_score").shape == (BATCH,)
    assert all(output["parameters"]["binary_data_size"] > 0 for output in result.get_response()["outputs"])


def test_pictures_with_json_outputs_selected(
    triton_client: triton.InferenceServerClient, server: str, pictures: list[bytes]
) -> None:
    wanted = [triton.InferRequestedOutput("digit", binary_data=False), triton.InferRequestedOutput("attention")]
    result = triton_client.infer(MODEL, [_images(pictures[:3])], outputs=wanted)
    names = [output["name"] for output in result.get_response()["outputs"]]
    assert names == ["digit", "attention"]
    assert result.get_response()["outputs"][0]["data"] == _v1_probabilities(server, pictures[:3]).argmax(1).tolist()
    maps = result.as_numpy("attention")
    assert maps.shape == (3, 4, 4)  # the tiny model's 4x4 patch grid
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1, atol=1e-4)  # the rollout sums to 1


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_normalised_inputs_answer_as_the_pictures_do(
    triton_client: triton.InferenceServerClient, pictures: list[bytes], binary: bool
) -> None:
    wanted = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "digit")]
    from_pictures = triton_client.infer(MODEL, [_images(pictures)], outputs=wanted)
    from_inputs = triton_client.infer(MODEL, [_inputs(pictures, binary)], outputs=wanted)
    np.testing.assert_allclose(from_inputs.as_numpy("probabilities"), from_pictures.as_numpy("probabilities"), 1e-5)
    np.testing.assert_array_equal(from_inputs.as_numpy("digit"), from_pictures.as_numpy("digit"))
    assert from_inputs.as_numpy("probabilities").shape == (BATCH, 10)


def test_bad_picture_fails_the_request_naming_it(
    triton_client: triton.InferenceServerClient, pictures: list[bytes]
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        triton_client.infer(MODEL, [_images([pictures[0], pictures[1][: len(pictures[1]) // 2]])])
    assert raised.value.status() == "400"
    assert raised.value.message().startswith("invalid_image: picture 1: ")


def test_unknown_model_and_version_are_404(triton_client: triton.InferenceServerClient, pictures: list[bytes]) -> None:
    for model, version in [("nope", ""), (MODEL, "2")]:
        with pytest.raises(InferenceServerException) as raised:
            triton_client.infer(model, [_images(pictures[:1])], model_version=version)
        assert raised.value.status() == "404" and "model_not_found" in raised.value.message()


def test_too_many_pictures_is_400(triton_client: triton.InferenceServerClient, pictures: list[bytes]) -> None:
    with pytest.raises(InferenceServerException) as raised:
        triton_client.infer(MODEL, [_images([pictures[0]] * (BATCH + 1))])
    assert raised.value.status() == "400" and "between 1 and 64" in raised.value.message()


def test_overloaded_server_answers_503_with_retry_after(tiny_checkpoint: Path, pictures: list[bytes]) -> None:
    with serve(tiny_checkpoint, VIT_DIGITS_QUEUE_SIZE="4") as (base, _):
        client = triton.InferenceServerClient(base.removeprefix("http://"))
        with pytest.raises(InferenceServerException) as raised:  # more pictures than the queue holds
            client.infer(MODEL, [_images(pictures[:8])])
        assert raised.value.status() == "503" and raised.value.message().startswith("queue_full: ")
        assert client.infer(MODEL, [_images(pictures[:4])]).as_numpy("digit").shape == (4,)
        # many requests at once: any turned away has Retry-After, and none fails otherwise
        statuses = _concurrent_infers(base, pictures[:4], 48)
        assert set(statuses) <= {200, 503} and 200 in statuses, statuses
        client.close()


def _concurrent_infers(base: str, pictures: list[bytes], count: int) -> list[int]:
    """Status of each of ``count`` simultaneous binary infers of ``pictures``; the Retry-After of every 503 checked."""
    image = {
        "name": "image",
        "shape": [len(pictures)],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": sum(4 + len(p) for p in pictures)},
    }
    header = json.dumps({"inputs": [image]}).encode()
    data = b"".join(len(p).to_bytes(4, "little") + p for p in pictures)
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}

    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=count)) as http:
            answers = await asyncio.gather(
                *(http.post(f"/v2/models/{MODEL}/infer", content=header + data, headers=headers) for _ in range(count))
            )
        for answer in answers:
            if answer.status_code == 503:
                assert answer.headers["retry-after"] == "1" and answer.json()["error"].startswith("queue_full: ")
        return [answer.status_code for answer in answers]

    return asyncio.run(main())
