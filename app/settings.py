"""Service settings: one pydantic-settings class, read from ``VIT_DIGITS_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.preprocess import DEFAULT_MAX_FULL_DECODE_PIXELS, DEFAULT_MAX_PIXELS

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every setting of the service. docs/SETTINGS.md lists them, generated from these fields
    (``python -m app.settings_doc``, ``make docs``)."""

    model_config = SettingsConfigDict(env_prefix="VIT_DIGITS_", env_file=".env", extra="ignore")

    checkpoints: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [ROOT / "checkpoints"],
        description="model files and/or folders of them to serve (comma-separated): `*.safetensors` checkpoints "
        "and their `*.onnx` exports (same stem: one model)",
    )
    default_model: str | None = Field(
        None, description="id (file stem) of the default model; unset: the first one found"
    )
    device: str = Field(
        "auto",
        description="`auto` (CUDA if torch is installed and an NVIDIA driver is loaded, else CPU) | `cpu` | `cuda` "
        "| `cuda:N`; CUDA needs the `torch` extra and serves the checkpoint, CPU serves the ONNX export",
    )
    half: bool = Field(False, description="fp16 weights and inputs on CUDA (ignored on CPU)")
    # 2 workers x 1 thread measured best on 2 cores (bench/serve_load.py; docs/PERFORMANCE.md)
    torch_threads: int = Field(
        1, ge=0, description="intra-op threads per worker, for torch and ONNX Runtime; 0: their default"
    )
    max_batch_size: int = Field(32, ge=1, le=1024, description="most images in one forward pass")
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="how long a batch waits to fill up; 0: it runs at once, batching what queued while the model "
        "was busy",
    )
    queue_size: int = Field(512, ge=1, description="queued images before `503 queue_full` with `Retry-After`")
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        description="per-request deadline from the body's arrival, covering decoding, preprocessing and inference "
        "(`504 inference_timeout` after; per image in a batch)",
    )
    max_upload_bytes: int = Field(
        5_000_000, ge=1, description="request body cap, enforced as the body streams in (413 beyond)"
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="image size cap (width x height), checked before decoding"
    )
    max_full_decode_pixels: int = Field(
        DEFAULT_MAX_FULL_DECODE_PIXELS,
        ge=1,
        description="image size cap for the formats decoded at full size (all but JPEG), whose decoding cost "
        "grows with their size; WebP, which takes twice the memory a pixel, gets half of it",
    )
    max_concurrent_decodes: int = Field(
        1,
        ge=1,
        description="decoder processes per worker: pictures decoded and preprocessed at once, each in a process of "
        "its own with the limits below; others wait, within their deadline",
    )
    decode_timeout_s: float = Field(
        5.0,
        gt=0,
        description="most seconds one picture may spend in its decoder process (within the request's deadline): past "
        "it, or past the deadline, the process is killed (the work stops) and replaced, and the picture gets 504",
    )
    decode_memory_mb: int = Field(
        150,
        ge=64,
        description="address space a decoder process may map beyond what it holds when it starts (RLIMIT_AS): a "
        "picture that needs more gets 413 image_too_large; docs/HARDENING.md has what the biggest pictures need",
    )
    decode_max_tasks: int = Field(
        1000, ge=1, description="pictures a decoder process decodes before a fresh one takes its place"
    )
    max_batch_files: int = Field(64, ge=1, description="most images in one /v1/predict/batch request")
    reject_non_digits: bool = Field(
        False,
        description="default of `?reject`: true answers a picture that is not a digit with `422 not_a_digit` "
        "instead of a prediction with `is_digit: false`",
    )
    api_key: str | None = Field(
        None,
        description="if set, /v1/* requires this `X-API-Key` header (401 without it; the OpenAPI document declares "
        "it only then); set but empty is a startup error",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="allowed CORS origins (comma-separated; `*` for any)"
    )
    host: str = Field("127.0.0.1", description="bind address of `python -m app` (`make serve` binds 0.0.0.0)")
    port: int = Field(8000, ge=1, le=65535, description="port of `python -m app`")
    workers: int = Field(
        2,
        ge=1,
        description="server processes of `python -m app`, each loading the models and batching on its own: 1 runs "
        "one uvicorn server in this process (what a container runs); more run under gunicorn's arbiter with "
        "uvicorn workers; /metrics adds up over them",
    )
    reuse_port: bool = Field(
        True,
        description="with several workers: each listens on a socket of its own (SO_REUSEPORT) and the kernel spreads "
        "new connections evenly over them; false: one shared socket, where one worker can take most of a burst of "
        "connections (docs/PERFORMANCE.md), but which a hung or starting worker leaves to the others (with its own "
        "socket, the new connections the kernel gives a starting worker wait for its models to load, and a hung "
        "one's until it is replaced, `worker_timeout_s`); set it false under systemd socket activation, whose "
        "socket gunicorn does not use with a socket per worker",
    )
    worker_timeout_s: int = Field(
        30,
        ge=2,
        description="with several workers: one serving that shows no sign of life for this long (hung, stopped) is "
        "killed and replaced (gunicorn's --timeout; it starts counting once the worker's models are loaded)",
    )
    shutdown_grace_s: int = Field(
        5,
        ge=1,
        description="on SIGTERM: how long requests in flight may take to finish before they are cancelled and the "
        "app shuts down (keep it under the orchestrator's stop timeout: docker's is 10 s)",
    )
    on_load_failure: Literal["exit", "stay"] = Field(
        "exit",
        description="if the models cannot be loaded: `exit` with the reason (status 1; 3 when they load before "
        "listening, as they always do with several workers) or `stay` up, not ready (/readyz 503 with the reason)",
    )
    http: Literal["httptools", "h11"] = Field(
        "httptools",
        description="uvicorn's HTTP parser: `httptools` (faster) or `h11` (enforces VIT_DIGITS_MAX_HEADER_BYTES)",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="with VIT_DIGITS_HTTP=h11: most bytes of a request's header; 400 and the connection closes "
        "beyond (httptools has no such limit: the load balancer in front enforces one)",
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="per process: requests arriving while this many connections are open get a plain-text 503 "
        "(uvicorn's limit_concurrency); unset: no limit",
    )
    keep_alive_s: int = Field(5, ge=1, description="idle keep-alive connections are closed after this many seconds")
    load_before_listen: bool = Field(
        False,
        description="load and warm up the models before taking connections (always, for the workers of a "
        "multi-worker `python -m app`); false: /healthz answers while they load",
    )
    log_level: str = Field("info", description="`debug` | `info` | `warning` | `error`")

    @field_validator("api_key")
    @classmethod
    def _key_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("VIT_DIGITS_API_KEY is set but empty; unset it to serve without a key, or give a key")
        return value

    @field_validator("checkpoints", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
