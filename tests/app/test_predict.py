import io
import time

import numpy as np
import pytest
from PIL import Image

from model.checkpoint import file_sha256
from tests.app.conftest import png_bytes

PNG = {"content-type": "image/png"}


def _lab_tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("LAB", (40, 40), (50, 0, 0)).save(buf, "TIFF")  # CIELab: Pillow cannot make it grayscale
    return buf.getvalue()


def _assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert body["error"]["message"] and body["error"]["request_id"]
    return body["error"]


def test_predict_raw_body_and_multipart_agree(client, digit_png, tiny_checkpoint):
    raw = client.post("/v1/predict", content=digit_png, headers=PNG)
    form = client.post("/v1/predict", files={"file": ("seven.png", digit_png, "image/png")})
    assert raw.status_code == form.status_code == 200
    a, b = raw.json(), form.json()
    assert a["probabilities"] == b["probabilities"]
    assert a["digit"] == int(np.argmax(a["probabilities"])) and a["label"] == str(a["digit"])
    assert abs(sum(a["probabilities"]) - 1) < 1e-4 and len(a["probabilities"]) == 10
    assert a["sha256"] == file_sha256(tiny_checkpoint) and a["model_id"] == "tiny"
    assert len(a["top_k"]) == 3 and a["top_k"][0]["probability"] == a["confidence"]
    assert a["latency_ms"] > 0


def test_predict_top_k_and_request_id(client, digit_png):
    r = client.post("/v1/predict?top_k=10", content=digit_png, headers={**PNG, "X-Request-ID": "abc-123"})
    assert len(r.json()["top_k"]) == 10
    assert r.headers["x-request-id"] == "abc-123"
    assert client.get("/healthz").headers["x-request-id"]


def test_predict_jpeg_dark_on_white_is_inverted(client):
    canvas = np.full((200, 200), 250, np.uint8)
    canvas[40:160, 95:105] = 5
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, "JPEG")
    r = client.post("/v1/predict", content=buf.getvalue(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["inverted"] is True


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"", PNG, 400, "empty_image"),
        (b"definitely not a png", PNG, 415, "unsupported_format"),
        (b"x", {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (b"x", {"content-type": "image/svg+xml"}, 415, "unsupported_media_type"),
        (_lab_tiff(), {"content-type": "image/tiff"}, 415, "unsupported_format"),
        (
            png_bytes(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8))[:900],
            PNG,
            400,
            "invalid_image",
        ),
        (png_bytes(np.full((40, 40), 255, np.uint8)), PNG, 422, "no_digit"),
    ],
)
def test_predict_bad_images_get_clear_4xx(client, content, headers, status, code):
    _assert_error(client.post("/v1/predict", content=content, headers=headers), status, code)


def test_predict_multipart_without_file_field(client):
    _assert_error(client.post("/v1/predict", data={"other": "x"}, files={"nope": ("a.txt", b"x")}), 422, "missing_file")


def test_predict_multipart_fields_besides_the_image_are_refused_as_the_schema_says(client, digit_png):
    image = {"file": ("seven.png", digit_png, "image/png")}
    err = _assert_error(client.post("/v1/predict", data={"note": "x"}, files=image), 422, "unexpected_field")
    assert "'note'" in err["message"]
    many = {f"f{i}": "x" for i in range(20)}
    _assert_error(client.post("/v1/predict", data=many, files=image), 422, "unexpected_field")
    batch = [("files", ("a.png", digit_png, "image/png"))]
    _assert_error(client.post("/v1/predict/batch", data=many, files=batch), 422, "unexpected_field")
    assert client.post("/v1/predict", files=image).status_code == 200


def test_user_input_is_echoed_back_bounded(client, digit_png):
    long = "m" * 60_000
    r = client.post(f"/v1/predict?model={long}", content=digit_png, headers=PNG)
    assert r.status_code == 422 and len(r.content) < 500
    r = client.post("/v1/predict", content=b"x", headers={"content-type": "text/" + "x" * 5000})
    assert r.status_code == 415 and len(r.content) < 500
    files = [("files", ("n" * 300 + ".png", digit_png, "image/png"))]
    r = client.post("/v1/predict/batch", files=files)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"][0]["filename"]) <= 258


def test_predict_pixel_cap_rejects_decompression_bombs(make_client):
    client = make_client(max_image_pixels=1_000_000)
    bomb = png_bytes(np.zeros((2000, 1000), np.uint8))  # 2 MP, a few kB on the wire
    assert len(bomb) < 20_000
    _assert_error(client.post("/v1/predict", content=bomb, headers=PNG), 413, "image_too_large")


def test_predict_body_over_limit_by_content_length(make_client, digit_png):
    client = make_client(max_upload_bytes=1000)
    _assert_error(client.post("/v1/predict", content=b"\x89PNG" + b"0" * 5000, headers=PNG), 413, "payload_too_large")
    assert client.post("/v1/predict", content=digit_png, headers=PNG).status_code == 200


def test_predict_unknown_model_and_bad_query(client, digit_png):
    err = _assert_error(client.post("/v1/predict?model=nope", content=digit_png, headers=PNG), 404, "model_not_found")
    assert "tiny" in err["message"]
    _assert_error(client.post("/v1/predict?top_k=11", content=digit_png, headers=PNG), 422, "invalid_request")
    _assert_error(client.get("/v1/predict"), 405, "method_not_allowed")
    _assert_error(client.get("/nowhere"), 404, "not_found")


def test_batch_keeps_order_and_isolates_bad_images(client, digit_png):
    files = [
        ("files", ("a.png", digit_png, "image/png")),
        ("files", ("bad.png", b"junk", "image/png")),
        ("files", ("blank.png", png_bytes(np.zeros((30, 30), np.uint8)), "image/png")),
        ("files", ("c.png", digit_png, "image/png")),
    ]
    r = client.post("/v1/predict/batch", files=files)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["index"] for x in results] == [0, 1, 2, 3]
    assert [x["filename"] for x in results] == ["a.png", "bad.png", "blank.png", "c.png"]
    assert results[0]["prediction"]["probabilities"] == results[3]["prediction"]["probabilities"]
    assert results[1]["error"]["code"] == "unsupported_format" and results[1]["prediction"] is None
    assert results[2]["error"]["code"] == "no_digit"


def test_batch_limits_and_media_type(make_client, digit_png):
    client = make_client(max_batch_files=2)
    files = [("files", (f"{i}.png", digit_png, "image/png")) for i in range(3)]
    _assert_error(client.post("/v1/predict/batch", files=files), 413, "too_many_files")
    _assert_error(client.post("/v1/predict/batch", content=digit_png, headers=PNG), 415, "unsupported_media_type")
    _assert_error(client.post("/v1/predict/batch", data={"x": "1"}, files={"y": ("a", b"1")}), 422, "missing_file")


def test_predict_large_photo_goes_through_the_worker_path(client):
    photo = np.full((900, 1200, 3), (235, 230, 220), np.uint8)  # off-white paper, 1.08 MP
    photo[150:750, 560:640] = (30, 30, 40)  # a thick dark "1"
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=90)
    r = client.post("/v1/predict", files={"file": ("photo.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200 and r.json()["inverted"] is True


@pytest.mark.parametrize("size", [64, 600])  # decoded on the event loop, and in a worker thread
def test_a_bad_upload_is_freed_at_once_not_at_the_next_garbage_collection(client, size):
    """The service collects garbage rarely (app.main); an error must not leave the upload or the
    half-decoded image in a reference cycle that only a collection would free."""
    import gc

    noise = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    truncated = png_bytes(noise)[: size * size]  # the header is fine, the pixel data stops early
    client.post("/v1/predict", content=truncated, headers=PNG)  # warm-up
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        r = client.post("/v1/predict", content=truncated, headers=PNG)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image"
        gc.collect()
        held = [o for o in gc.garbage if isinstance(o, Image.Image | bytes) and not isinstance(o, type)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert held == []


def test_batch_deadline_covers_decoding_a_late_picture_gets_its_own_504(make_client, digit_png):
    client = make_client(request_timeout_s=0.3, max_concurrent_decodes=1)
    big = np.full((2500, 2500, 3), 235, np.uint8)  # over 256x256: decoded one at a time, in a thread
    big[500:2000, 1200:1400] = 20
    big_png = png_bytes(big)
    files = [("files", ("digit.png", digit_png, "image/png"))]
    files += [("files", (f"big{i}.png", big_png, "image/png")) for i in range(40)]
    started = time.monotonic()
    r = client.post("/v1/predict/batch", files=files)
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["prediction"] is not None  # a small one, preprocessed at once
    late = [x for x in results if x["error"] and x["error"]["code"] == "inference_timeout"]
    assert late and all(x["prediction"] or x in late for x in results)
    assert elapsed < 0.3 + 2.0, f"answered after {elapsed:.1f} s; 40 pictures one by one take far longer"


def test_big_pictures_over_the_full_decode_cap_are_refused_but_jpeg_is_decoded_small(make_client):
    client = make_client(max_full_decode_pixels=4_000_000)
    photo = np.full((2000, 3000, 3), 235, np.uint8)  # 6 megapixels
    photo[400:1600, 1400:1600] = 20
    _assert_error(client.post("/v1/predict", content=png_bytes(photo), headers=PNG), 413, "image_too_large")
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG")
    r = client.post("/v1/predict", content=buf.getvalue(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["inverted"] is True


def test_a_png_cut_off_inside_its_header_is_400_alone_in_a_batch(client, digit_png):
    # cut off after the IHDR chunk's header: the small-PNG check read past the end (a 500, the whole batch)
    cut = digit_png[:20]
    r = client.post("/v1/predict", content=cut, headers={"content-type": "image/png"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image"
    files = [("files", ("a.png", digit_png, "image/png")), ("files", ("b.png", cut, "image/png"))]
    results = client.post("/v1/predict/batch", files=files).json()["results"]
    assert "prediction" in results[0] and results[1]["error"]["code"] == "invalid_image"
