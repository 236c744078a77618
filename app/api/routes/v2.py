"""The Open Inference Protocol (KServe V2) over REST, under /v2: health, metadata and infer, over the
same pipeline and batchers as /v1.

The infer route reads the request into pictures or model inputs (:mod:`app.api.tensors`), has the
pipeline answer all of them or fail (one tensor in, one out: a bad picture fails the request, its
position named), and writes the outputs asked for.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.oip import EXTENSIONS, model_metadata, model_version, tensor_limits
from app.api.params import rejects
from app.api.state import decoding_of, oip_model_of, registry_of, settings_of
from app.api.tensors import ATTENTION, INFER_BODY, INFER_RESPONSE, InferCall, infer_response, read_infer_request
from app.batcher import MicroBatcher
from app.errors import OIP_INFER_ERRORS, OIP_MODEL_NOT_FOUND, OIP_NOT_READY
from app.pipeline import Deadline, R, classify_all, infer_all
from app.registry import ServedModel
from app.schemas import OipLive, OipModelMetadata, OipReady, OipServerMetadata

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
MODEL = "/models/{name}"
VERSION = "/models/{name}/versions/{version}"
METADATA_ERRORS: dict[int | str, dict[str, object]] = {404: OIP_MODEL_NOT_FOUND, 503: OIP_NOT_READY}


@router.get("", response_model=OipServerMetadata)
async def server_metadata(request: Request) -> OipServerMetadata:
    """The server's name, version and protocol extensions (Triton's binary tensor data)."""
    return OipServerMetadata(name=request.app.title, version=request.app.version, extensions=EXTENSIONS)


@router.get("/health/live", response_model=OipLive)
async def live() -> OipLive:
    """The process is up (it may still be loading models); needs no API key."""
    return OipLive(live=True)


@router.get("/health/ready", response_model=OipReady, responses={503: OIP_NOT_READY})
async def ready(request: Request) -> Response:
    """200 once every model is loaded and warmed up, 503 before; needs no API key."""
    registry_of(request)
    return Response('{"ready":true}', media_type="application/json")


@router.get(MODEL, response_model=OipModelMetadata, responses=METADATA_ERRORS, response_model_exclude_none=True)
async def metadata(request: Request, name: str) -> OipModelMetadata:
    """The model's versions, platform, inputs and outputs (and the normalisation `input` wants)."""
    return model_metadata(oip_model_of(request, name, None), settings_of(request))


@router.get(VERSION, response_model=OipModelMetadata, responses=METADATA_ERRORS, response_model_exclude_none=True)
async def version_metadata(request: Request, name: str, version: str) -> OipModelMetadata:
    """The model's metadata, if `version` is the one served."""
    return model_metadata(oip_model_of(request, name, version), settings_of(request))


@router.get(MODEL + "/ready", response_model=OipReady, responses=METADATA_ERRORS)
async def model_ready(request: Request, name: str) -> Response:
    """200 if the model is served and ready."""
    oip_model_of(request, name, None)
    return Response('{"ready":true}', media_type="application/json")


@router.get(VERSION + "/ready", response_model=OipReady, responses=METADATA_ERRORS)
async def version_ready(request: Request, name: str, version: str) -> Response:
    """200 if the model is served at this version and ready."""
    oip_model_of(request, name, version)
    return Response('{"ready":true}', media_type="application/json")


@router.post(MODEL + "/infer", responses=OIP_INFER_ERRORS | INFER_RESPONSE, openapi_extra=INFER_BODY)
async def infer(request: Request, name: str) -> Response:
    """Classify pictures (`image`, BYTES [N]) or normalised model inputs (`input`, FP32 [N,1,28,28])."""
    return await _infer(request, oip_model_of(request, name, None))


@router.post(VERSION + "/infer", responses=OIP_INFER_ERRORS | INFER_RESPONSE, openapi_extra=INFER_BODY)
async def version_infer(request: Request, name: str, version: str) -> Response:
    """Infer on the model if `version` is the one served."""
    return await _infer(request, oip_model_of(request, name, version))


async def _infer(request: Request, served: ServedModel) -> Response:
    settings = settings_of(request)
    call = read_infer_request(await request.body(), request.headers, tensor_limits(served, settings))
    deadline = Deadline.start(min(call.timeout_s or settings.request_timeout_s, settings.request_timeout_s))
    if call.wants(ATTENTION):  # the attention batcher's runs give the maps too
        with_maps = await _answers(request, call, served, served.attention, deadline)
        return infer_response(call, served.id, model_version(served), with_maps)
    answers = await _answers(request, call, served, served.predict, deadline)
    return infer_response(call, served.id, model_version(served), answers)


async def _answers(
    request: Request, call: InferCall, served: ServedModel, batcher: MicroBatcher[R], deadline: Deadline
) -> list[R]:
    """``call``'s pictures or inputs answered on ``batcher`` (one of ``served``'s)."""
    reject = rejects(call.reject, settings_of(request))
    if call.pictures is not None:
        answers = await classify_all(call.pictures, served, batcher, decoding_of(request), deadline, reject)
        return [result for _, result in answers]
    assert call.inputs is not None  # read_infer_request gives one or the other
    return await infer_all(call.inputs, served, batcher, deadline, reject)
