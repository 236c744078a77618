"""The client package (client/, vit_digits_client) against a live server: what each call returns, its
typed errors, and that overload and a restarting server never reach the caller."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import serve
from tests.servers import free_port, start_app, wait_ready
from vit_digits_client import (
    AsyncClient,
    Attention,
    Client,
    InvalidImage,
    ModelNotFound,
    NoDigit,
    NotADigit,
    Prediction,
    RetryPolicy,
    Unauthorized,
)
from vit_digits_client.errors import ConnectionFailed

pytestmark = pytest.mark.slow  # each test starts a server process


PNG = {"content-type": "image/png"}


def _v1(server: str, picture: bytes) -> dict[str, object]:
    return httpx.post(f"{server}/v1/predict", content=picture, headers=PNG).json()


def _requests(server: str, path: str, status: int) -> float:
    """How many requests to ``path`` the server answered with ``status`` so far (its /metrics)."""
    pattern = rf'vit_digits_requests_total\{{method="\w+",route="{re.escape(path)}",status="{status}"\}} (\S+)'
    found = re.search(pattern, httpx.get(f"{server}/metrics").text)
    return float(found.group(1)) if found else 0.0


def test_predict_takes_paths_bytes_pil_images_and_arrays(server: str, digits: list[bytes], tmp_path: Path) -> None:
    path = tmp_path / "seven.png"
    path.write_bytes(digits[0])
    pixels = np.array(Image.open(io.BytesIO(digits[0])))
    expected = _v1(server, digits[0])
    with Client(server) as client:
        for picture in (path, str(path), digits[0], Image.open(path), pixels, pixels / 255.0, pixels[:, :, None]):
            prediction = client.predict(picture)
            assert isinstance(prediction, Prediction)
            assert prediction.digit == expected["digit"]
            assert prediction.probabilities == tuple(expected["probabilities"])
            assert prediction.model_id == "tiny" and len(prediction.top_k) == 3


def test_predict_many_chunks_to_the_servers_limit_and_keeps_order(server: str, digits: list[bytes]) -> None:
    pictures = [*digits[:5], b"not a picture", *digits[5:]]
    before = _requests(server, "/v1/predict/batch", 200)
    done: list[int] = []
    with Client(server) as client:
        assert client.batch_limit() == 4  # the server's VIT_DIGITS_MAX_BATCH_FILES, from its OpenAPI document
        results = client.predict_many(iter(pictures), progress=done.append)
    assert _requests(server, "/v1/predict/batch", 200) - before == 3  # 11 pictures, 4 a request
    assert done == [4, 8, 11]
    assert isinstance(results[5], InvalidImage) and results[5].code == "unsupported_format"
    answers = [r for r in results if isinstance(r, Prediction)]
    assert [a.digit for a in answers] == [_v1(server, d)["digit"] for d in digits]


def test_async_client_answers_as_the_blocking_one(server: str, digits: list[bytes]) -> None:
    async def main() -> tuple[Prediction, list[object], int]:
        async with AsyncClient(server, concurrency=2) as client:
            one = await client.predict(digits[0])
            many = await client.predict_many(digits)
            return one, many, len(await client.models())

    one, many, models = asyncio.run(main())
    with Client(server) as client:
        blocking = client.predict(digits[0])
        assert (one.digit, one.probabilities) == (blocking.digit, blocking.probabilities)
        blocking_many = client.predict_many(digits)
    assert len(many) == len(blocking_many) == len(digits)
    assert [getattr(m, "digit", None) for m in many] == [getattr(b, "digit", None) for b in blocking_many]
    assert models == 1


def test_attention_and_models(server: str, digits: list[bytes]) -> None:
    with Client(server) as client:
        maps = client.attention(digits[0], layers=True)
        (model,) = client.models()
    assert isinstance(maps, Attention) and maps.grid == 4 and len(maps.rollout) == 4
    assert abs(sum(map(sum, maps.rollout)) - 1) < 1e-3 and maps.layers is not None and len(maps.layers) == 2
    assert (model.id, model.default, model.runtime) == ("tiny", True, "onnxruntime")
    assert model.calibration.threshold is None


def test_errors_are_typed_and_4xx_never_retried(server: str, digits: list[bytes]) -> None:
    blank = io.BytesIO()
    Image.new("L", (28, 28)).save(blank, "PNG")
    before = _requests(server, "/v1/predict", 422)
    with Client(server) as client:
        with pytest.raises(NoDigit) as raised:
            client.predict(blank.getvalue())
        assert raised.value.status == 422 and raised.value.request_id
        with pytest.raises(InvalidImage):
            client.predict(b"GIF89a and then nothing")
        with pytest.raises(ModelNotFound):
            client.predict(digits[0], model="nope")
        with pytest.raises(TypeError):
            client.predict(3.14)  # type: ignore[arg-type]
    assert _requests(server, "/v1/predict", 422) - before == 1


def test_not_a_digit_when_rejecting(make_judged_server: str, digits: list[bytes]) -> None:
    with Client(make_judged_server) as client:
        assert client.predict(digits[0]).is_digit is False
        with pytest.raises(NotADigit):
            client.predict(digits[0], reject=True)


@pytest.fixture(scope="module")
def make_judged_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """A server whose model calls nothing a digit (its threshold is out of reach)."""
    from tests.app.test_not_a_digit import _with_threshold

    checkpoint = _with_threshold(tiny_checkpoint, tmp_path_factory.mktemp("judged"), 1e6)
    with serve(checkpoint) as (base, _):
        yield base


def test_api_key_from_argument_or_environment(tiny_checkpoint: Path, digits: list[bytes], monkeypatch) -> None:
    with serve(tiny_checkpoint, VIT_DIGITS_API_KEY="s3cret") as (base, _):
        with Client(base) as client, pytest.raises(Unauthorized):
            client.predict(digits[0])
        with Client(base, api_key="s3cret") as client:
            assert client.predict(digits[0]).model_id == "tiny"
        monkeypatch.setenv("VIT_DIGITS_API_KEY", "s3cret")
        monkeypatch.setenv("VIT_DIGITS_URL", base)
        with Client() as client:
            assert client.url == base and client.predict(digits[0]).model_id == "tiny"


def test_overloaded_server_200_concurrent_calls_all_answered(tiny_checkpoint: Path, digits: list[bytes]) -> None:
    with serve(tiny_checkpoint, VIT_DIGITS_QUEUE_SIZE="4") as (base, _):

        async def main() -> list[Prediction]:
            async with AsyncClient(base, timeout=60) as client:
                return await asyncio.gather(*(client.predict(digits[i % 10]) for i in range(200)))

        answers = asyncio.run(main())
        with Client(base, timeout=60) as client, ThreadPoolExecutor(32) as pool:
            threaded = list(pool.map(client.predict, [digits[i % 10] for i in range(200)]))
        turned_away = _requests(base, "/v1/predict", 503)
    assert len(answers) == len(threaded) == 200
    assert all(isinstance(a, Prediction) for a in answers + threaded)
    assert turned_away > 0, "the server was never at capacity: the test proves nothing"


def test_server_killed_and_restarted_mid_run_loses_nothing(tiny_checkpoint: Path, digits: list[bytes]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"VIT_DIGITS_DEVICE": "cpu"}
    server = start_app(tiny_checkpoint, port, **env)
    wait_ready(base, server)
    results: list[object] = []
    started = threading.Event()

    def run() -> None:
        with Client(base, retry=RetryPolicy(timeout=90, max_backoff=0.5)) as client:
            for i in range(60):
                results.append(client.predict(digits[i % 10]))
                started.set()
            results.extend(client.predict_many(digits * 3))

    caller = threading.Thread(target=run)
    caller.start()
    try:
        assert started.wait(30)
        os.kill(server.pid, signal.SIGKILL)  # mid-run: requests in flight and after it fail to connect
        server.wait(10)
        server = start_app(tiny_checkpoint, port, **env)
        caller.join(120)
    finally:
        server.terminate()
        server.wait(20)
    assert not caller.is_alive()
    assert len(results) == 90 and all(isinstance(r, Prediction) for r in results)


def test_unreachable_server_fails_with_connection_failed_at_the_deadline() -> None:
    policy = RetryPolicy(timeout=0.5, max_backoff=0.1)
    with Client(f"http://127.0.0.1:{free_port()}", retry=policy) as client, pytest.raises(ConnectionFailed):
        client.predict(b"\x89PNG\r\n\x1a\n")
