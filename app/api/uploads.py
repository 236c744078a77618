"""The image routes' request bodies: getting the image bytes out of a request, and how the OpenAPI
document describes them (FastAPI cannot see bodies read by hand)."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from app.errors import ApiError, clip

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/tiff")
FILENAME_CHARS = 255  # a batch result echoes at most this much of each file's name

SINGLE_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "one image: a multipart field `file`, or the raw bytes with an image content type",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "additionalProperties": False,
                }
            },
            **{media: {"schema": {"type": "string", "format": "binary"}} for media in IMAGE_TYPES},
        },
    }
}
BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _form(request: Request, field: str, max_files: int) -> FormData:
    """The multipart form of ``request``, holding only parts named ``field`` (as the OpenAPI schema
    says: ``additionalProperties: false``); starlette's refusals become this API's errors."""
    try:
        form = await request.form(max_files=max_files, max_fields=8)
    except HTTPException as exc:  # starlette: 400 with the parser's reason
        if str(exc.detail).startswith("Too many files"):
            raise ApiError(413, "too_many_files", f"at most {max_files} files per request") from exc
        if str(exc.detail).startswith("Too many fields"):
            raise ApiError(422, "unexpected_field", f"send only multipart fields named {field!r}") from exc
        raise ApiError(400, "invalid_multipart", f"the multipart body cannot be read: {exc.detail}") from exc
    if not any(isinstance(value, UploadFile) for value in form.getlist(field)):
        plural = "any" if field == "files" else "a"
        raise ApiError(422, "missing_file", f"multipart request without {plural} {field!r} field holding an image")
    unexpected = next((name for name in form if name != field), None)
    if unexpected is not None:
        message = f"unexpected multipart field {clip(unexpected)!r}: send only fields named {field!r}"
        raise ApiError(422, "unexpected_field", message)
    return form


async def read_single_image(request: Request) -> bytes:
    """The image of a single-image request: multipart field ``file`` or a raw image body."""
    media = _media_type(request)
    if media == "multipart/form-data":
        upload = (await _form(request, "file", max_files=1)).get("file")
        assert isinstance(upload, UploadFile)  # checked by _form
        return await upload.read()
    if media.startswith("image/"):
        if media not in IMAGE_TYPES:
            raise ApiError(
                415, "unsupported_media_type", f"{clip(media)} is not accepted; send one of {', '.join(IMAGE_TYPES)}"
            )
        return await request.body()
    raise ApiError(
        415,
        "unsupported_media_type",
        f"content type {clip(media) or '(none)'} is not accepted: send multipart/form-data with a 'file' field, "
        f"or the image itself with an image/* content type",
    )


async def read_batch_images(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    """(filename, bytes) of every ``files`` field of a multipart batch request, in order."""
    if _media_type(request) != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send the images as multipart/form-data fields named 'files'")
    form = await _form(request, "files", max_files)
    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    return [(clip(u.filename or f"file{i}", FILENAME_CHARS), await u.read()) for i, u in enumerate(uploads)]
