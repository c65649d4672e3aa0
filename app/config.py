"""Service settings: one pydantic-settings class, read once at start-up (env prefix GENSERVE_)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.latent.batching import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENT_BATCHES,
    DEFAULT_MAX_DELAY_MS,
    DEFAULT_MAX_QUEUE_IMAGES,
    check_allowed_batch_sizes,
)
from app.server.quotas import parse_quota
from app.serving.compiled_calls import CompiledCalls
from app.serving.runtime import usable_cores
from app.serving.store_watcher import DEFAULT_RETRY_INITIAL_S, DEFAULT_RETRY_MAX_S
from app.serving.version_policy import VersionPolicy
from app.text.batching import (
    DEFAULT_MAX_ACTIVE_SEQUENCES,
    DEFAULT_MAX_QUEUED_SEQUENCES,
    DEFAULT_PREFILL_CHUNK_TOKENS,
    DEFAULT_PROMPT_CACHE_BYTES,
)


class Settings(BaseSettings):
    """Everything the service can be told through the environment."""

    # `populate_by_name`: the tracing fields read the standard OTEL_* variables too (their aliases), and tests
    # still give them by field name.
    model_config = SettingsConfigDict(
        env_prefix="GENSERVE_", env_file=None, extra="ignore", populate_by_name=True
    )

    model_store: Path = Field(Path("model_store"), description="Folder holding <name>/<version>/ models.")
    default_model: str | None = Field(None, description="Model used when a request names none.")
    host: str = Field("127.0.0.1", description="Address `python -m app` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `python -m app` listens on.")
    grpc_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of the TensorFlow Serving gRPC API (PredictionService, ModelService) on `host`; off when unset.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Logging level; `debug` also shows TensorFlow's own start-up and C++ log lines."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: one JSON object per log line, with the request id and the line's fields."
    )

    max_n: int = Field(64, ge=1, le=4096, description="Most images one /generate call may ask for.")
    max_steps: int = Field(64, ge=2, le=1024, description="Most frames one /interpolate call may ask for.")
    max_clips: int = Field(
        16,
        ge=1,
        le=1024,
        description="Sound generators: most clips one /generate or /interpolate call (or protocol request) may ask for.",
    )
    max_new_tokens: int = Field(
        512, ge=1, le=65536, description="Most tokens one text sequence may generate (max_new_tokens)."
    )
    max_prompt_chars: int = Field(4096, ge=1, description="Longest prompt of a text request, in characters.")
    max_active_sequences: int = Field(
        DEFAULT_MAX_ACTIVE_SEQUENCES,
        ge=1,
        description="Text sequences advanced together by one model step (continuous batching).",
    )
    max_queued_sequences: int = Field(
        DEFAULT_MAX_QUEUED_SEQUENCES, ge=1, description="Text sequences waiting for a place; 503 beyond."
    )
    prefill_chunk_tokens: int = Field(
        DEFAULT_PREFILL_CHUNK_TOKENS,
        ge=1,
        le=65536,
        description="Prompt characters one sequence reads per model call while others are decoding.",
    )
    prompt_cache_bytes: int = Field(
        DEFAULT_PROMPT_CACHE_BYTES,
        ge=0,
        description="Bytes per text model version of states after whole prompts, kept so a prompt that comes "
        "again is not read again; 0 keeps none.",
    )
    max_text_request_tokens: int = Field(
        65_536,
        ge=1,
        description="Most steps one text request may ask for: n x (prompt length + max_new_tokens); 422 beyond.",
    )
    max_batch_size: int = Field(
        DEFAULT_MAX_BATCH_SIZE, ge=1, description="Images per model call; 1 turns batching off."
    )
    max_delay_ms: float = Field(
        DEFAULT_MAX_DELAY_MS,
        ge=0,
        description="How long a batch may wait for more work while a model slot is free (0: it starts at once).",
    )
    adaptive_delay: bool = Field(
        True, description="Skip the batching delay (if there is one) while requests arrive one at a time."
    )
    max_queue_images: int = Field(
        DEFAULT_MAX_QUEUE_IMAGES, ge=1, description="Queued images beyond which requests get 503."
    )
    max_concurrent_batches: int = Field(
        DEFAULT_MAX_CONCURRENT_BATCHES, ge=1, description="Model calls per version that may run at once."
    )
    png_compress_level: int = Field(
        1,
        ge=0,
        le=9,
        description="zlib level of served PNGs: 1 encodes several times faster than Pillow's 6 for about 10% more bytes.",
    )
    render_threads: int = Field(
        2, ge=1, description="Threads rendering response bodies too large to render on the event loop."
    )
    tf_intra_op_threads: int | None = Field(
        None,
        ge=1,
        description=(
            "Threads TensorFlow uses inside one operation; unset: every usable CPU core, so a lone model call "
            "uses them all and calls running at once share them."
        ),
    )
    tf_inter_op_threads: int | None = Field(
        None, ge=1, description="Operations TensorFlow runs at once; its own choice when unset."
    )
    tf_cpu_bfloat16: bool = Field(
        False,
        description=(
            "Run the models' float32 graphs in bfloat16 on CPUs with bfloat16 instructions (AVX512-BF16, AMX), "
            "through TensorFlow's oneDNN rewrite: more images/s, pixels within a few levels of float32."
        ),
    )
    allowed_batch_sizes: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="Comma-separated batch sizes to pad to (fixed shapes for XLA/GPU)."
    )
    compiled_calls: CompiledCalls = Field(
        "auto",
        description=(
            "auto: once a generator serves, compile it with XLA per batch bucket in the background and serve each "
            "bucket with the compiled call where it measured faster on this machine; off: TensorFlow's own call."
        ),
    )
    model_call_cache: Path | None = Field(
        default_factory=lambda: Path.home() / ".cache" / "genserve" / "model-calls",
        description="Where the measured choice of model calls is kept (per machine, TensorFlow and version); "
        "unset: measured at every start.",
    )
    max_upload_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest uploaded image file (/encode, /reconstruct, POST /interpolate).",
    )
    max_upload_side: int = Field(
        4096, ge=8, le=65535, description="Largest width or height, in pixels, of an uploaded image."
    )
    max_upload_images: int = Field(
        16, ge=1, le=1024, description="Most images one /encode or /reconstruct call may upload."
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Deadline of one generation request.")
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest request body other than an image upload (JSON on POST /generate); 413 beyond.",
    )
    max_upload_pixels: int = Field(
        16 * 1024 * 1024,
        ge=64,
        description="Most pixels (width x height) of one uploaded image, checked before it is decoded; 422 beyond.",
    )
    max_request_pixels: int = Field(
        64 * 1024 * 1024,
        ge=64,
        description="Most pixels of all the images one upload request may hold together; 422 beyond.",
    )
    max_concurrent_decodes: int = Field(
        2, ge=1, description="Uploaded images decoded at once across all requests; others wait their turn."
    )
    keep_alive_s: int = Field(
        5,
        ge=1,
        description="Close a connection idle this long, before its first request or between requests.",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Close a connection whose request headers take longer than this to arrive."
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="Close a connection whose request body takes longer than this to arrive."
    )
    write_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Drop a client that reads none of its answer for this long once the socket's buffers are full "
        "(a stream whose reader stopped).",
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="Client connections each listener (HTTP, gRPC) holds at most; past it HTTP answers 503 with "
        "Retry-After and gRPC refuses at accept. Default: the open-file limit less a reserve for loads and the "
        "store watcher, shared between the listeners, at most 8192 each.",
    )
    max_connections_per_client: int | None = Field(
        None,
        ge=1,
        description="HTTP connections one client address holds at most (503 with Retry-After beyond); default: half "
        "of the HTTP connection budget, so one client cannot take all of it. Behind a proxy every client shares its "
        "address: set it to the budget there.",
    )
    grpc_idle_s: float = Field(
        300.0,
        gt=0,
        description="Close a gRPC connection with no call in progress for this long (clients reconnect as needed).",
    )
    shutdown_grace_s: float = Field(
        20.0, ge=0, description="On SIGTERM, how long queued and in-flight work may take to finish."
    )
    poll_interval_s: float = Field(10.0, ge=0, description="Rescan the store this often; 0 turns it off.")
    version_policy: str = Field(
        "latest", description="Versions to serve: latest, latest:N, all, or e.g. 1,3."
    )
    load_retry_initial_s: float = Field(
        DEFAULT_RETRY_INITIAL_S, gt=0, description="First wait before retrying a failed load."
    )
    load_retry_max_s: float = Field(
        DEFAULT_RETRY_MAX_S, gt=0, description="Longest wait between retries of a failed load."
    )
    load_timeout_s: float = Field(
        600.0,
        gt=0,
        description=(
            "Longest a version may take to load and warm up; past it the load is marked failed, retried like "
            "any failed load, and the next load goes ahead."
        ),
    )
    admin_token: SecretStr | None = Field(None, description="Bearer token enabling /admin; off when unset.")
    api_keys_file: Path | None = Field(
        None,
        description="A file of `name: key` lines: requests on the inference surface (HTTP and gRPC) need one of its "
        "keys (401 otherwise); re-read when it changes. Off when unset.",
    )
    quota_default: str | None = Field(
        None,
        description="The quota of API keys whose line sets none for a unit, in the keys file's options: e.g. "
        "`images_per_s=20 images_burst=40 tokens_per_s=500`; over it a request gets 429. Unlimited when unset.",
    )
    otlp_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("GENSERVE_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="Base URL of an OTLP/HTTP collector (or the standard OTEL_EXPORTER_OTLP_ENDPOINT): traces go "
        "to <url>/v1/traces. No tracing when neither this nor otlp_traces_endpoint is set.",
    )
    otlp_traces_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("GENSERVE_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        description="Full URL traces are posted to over OTLP/HTTP (or the standard "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); wins over otlp_endpoint.",
    )
    service_name: str = Field(
        "genserve",
        min_length=1,
        validation_alias=AliasChoices("GENSERVE_SERVICE_NAME", "OTEL_SERVICE_NAME"),
        description="The `service.name` of the traces (or the standard OTEL_SERVICE_NAME).",
    )
    interpolate_max_age_s: int = Field(
        3600, ge=0, description="Cache-Control max-age of /interpolate for a numbered version."
    )
    image_metadata: bool = Field(
        True,
        description="Write each answer's provenance (model, version, seeds, …) into its image files and JSON.",
    )
    image_cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Bytes of rendered image files kept for repeated image URLs; 0: none.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins (or *) that browsers may call the API from (CORS); none when empty.",
    )
    gpu_memory_limit_mb: int | None = Field(None, ge=1, description="Optional cap on GPU memory per device.")

    @field_validator("allowed_batch_sizes", mode="before")
    @classmethod
    def _split_sizes(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("grpc_port", mode="before")
    @classmethod
    def _blank_port_is_off(cls, value: object) -> object:
        # `GENSERVE_GRPC_PORT=` (as compose files pass an unset variable) leaves the gRPC API off.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("admin_token", mode="after")
    @classmethod
    def _blank_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        # `GENSERVE_ADMIN_TOKEN=` (empty, or only spaces) must not switch the admin API on with an empty password.
        if value is None or not value.get_secret_value().strip():
            return None
        return value

    @field_validator("version_policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        VersionPolicy.parse(value)
        return value

    @field_validator("quota_default")
    @classmethod
    def _check_quota(cls, value: str | None) -> str | None:
        if value is not None:
            parse_quota(value)
        return value

    @field_validator("otlp_endpoint", "otlp_traces_endpoint", mode="before")
    @classmethod
    def _blank_endpoint_is_off(cls, value: object) -> object:
        # `OTEL_EXPORTER_OTLP_ENDPOINT=` (as compose files pass an unset variable) leaves tracing off.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_batch_sizes(self) -> Settings:
        try:
            check_allowed_batch_sizes(self.allowed_batch_sizes, self.max_batch_size)
        except ValueError as error:
            raise ValueError(f"GENSERVE_ALLOWED_BATCH_SIZES and GENSERVE_MAX_BATCH_SIZE: {error}") from None
        return self

    @property
    def traces_endpoint(self) -> str | None:
        """Where traces are posted over OTLP/HTTP, as the OpenTelemetry variables say; None: no tracing."""
        if self.otlp_traces_endpoint:
            return self.otlp_traces_endpoint
        return f"{self.otlp_endpoint.rstrip('/')}/v1/traces" if self.otlp_endpoint else None

    @property
    def warmup_batch_sizes(self) -> list[int]:
        """Batch sizes the model is called with before it is reported ready."""
        if self.allowed_batch_sizes:
            return list(self.allowed_batch_sizes)
        return sorted({1, min(8, self.max_batch_size), self.max_batch_size})

    @property
    def intra_op_threads(self) -> int:
        """TensorFlow's threads per operation: the setting, else every usable core (one pool the calls share)."""
        return self.tf_intra_op_threads or usable_cores()
