"""Request and response shapes of the HTTP API."""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

# Formats of routes that answer with images only (reconstructions); POST /generate adds `text`.
ImageFormat = Literal["png", "json", "npy", "zip"]


class GenerateFormat(str, enum.Enum):
    """Formats of POST /generate: the image formats, `text` (plain text) for text generators, and `wav` and `flac`
    for sound generators (which also answer json, npy and zip)."""

    png = "png"
    json = "json"
    npy = "npy"
    zip = "zip"
    text = "text"
    wav = "wav"
    flac = "flac"


class AnimationFormat(str, enum.Enum):
    png = "png"
    gif = "gif"
    webp = "webp"
    json = "json"


class InterpolateFormat(str, enum.Enum):
    """Formats of GET /interpolate: an image generator's frame strip, animations or JSON; a sound generator's
    clips as one WAV or FLAC, a zip of WAVs or npy."""

    png = "png"
    gif = "gif"
    webp = "webp"
    json = "json"
    wav = "wav"
    flac = "flac"
    zip = "zip"
    npy = "npy"


class ImageFileFormat(str, enum.Enum):
    """Formats of one image at its own URL: PNG, or lossless WebP."""

    png = "png"
    webp = "webp"


class InterpolationMethodName(str, enum.Enum):
    slerp = "slerp"
    lerp = "lerp"


# JSON numbers only: `true` is not 1 and "0.5" is not 0.5.
Number = StrictInt | StrictFloat


class GenerateQuery(BaseModel):
    """The query fields of POST /generate, read from strings as FastAPI reads query parameters."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="Model name; the default model when absent.")
    version: str | None = Field(None, description="Version number, label or 'latest'.")
    n: int | None = Field(
        None,
        description="Number of images (1..GENSERVE_MAX_N, default 16); sound models: clips "
        "(1..GENSERVE_MAX_CLIPS, default 1).",
    )
    seed: int | None = Field(None, description="Seed of the first image; image i uses seed+i.")
    truncation: float | None = Field(None, description="Truncation psi in (0, 1]; 1 = none.")
    label: str | None = Field(
        None,
        description="Class name or index, for conditional models; without it image i gets class "
        "i % num_classes (the first image class 0, the next class 1, ...).",
    )
    cols: int | None = Field(None, description="Grid columns for format=png.")
    format: GenerateFormat | None = Field(
        None,
        description="png (grid, default), json, npy or zip; text models: json (default) or text; sound models: "
        "wav (default), flac, zip, npy or json.",
    )
    include_latents: bool | None = Field(None, description="With format=json, add each latent.")
    prompt: str | None = Field(None, description="Text models: the text to continue.")
    max_new_tokens: int | None = Field(
        None, description="Text models: most tokens per sequence (1..GENSERVE_MAX_NEW_TOKENS)."
    )
    temperature: float | None = Field(None, description="Text models: 0 is greedy, 1 (default) as learnt.")
    top_k: int | None = Field(None, description="Text models: sample among the k likeliest tokens.")
    top_p: float | None = Field(None, description="Text models: sample within this probability mass.")
    stop: list[str] | None = Field(None, description="Text models: stop sequences (repeat the field).")
    stream: bool | None = Field(None, description="Text models: server-sent events, one per token.")


# The fields of POST /generate that only text generators take, and those that only latent generators (images,
# sounds) take: the other kinds refuse them with a 422 naming the field.
TEXT_FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "stop", "stream")
IMAGE_FIELDS = ("truncation", "label", "cols", "include_latents", "latents")


class GenerateBody(BaseModel):
    """Optional JSON body of POST /generate: the query fields, plus explicit latent vectors."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    version: str | StrictInt | None = None
    n: StrictInt | None = None
    seed: StrictInt | None = None
    truncation: Number | None = None
    label: str | StrictInt | None = None
    cols: StrictInt | None = None
    format: GenerateFormat | None = None
    include_latents: StrictBool | None = None
    latents: list[list[Number]] | None = Field(
        None, description="Generate exactly these vectors (each of the model's latent length)."
    )
    # Text generators only.
    prompt: str | None = None
    max_new_tokens: StrictInt | None = None
    temperature: Number | None = None
    top_k: StrictInt | None = None
    top_p: Number | None = None
    stop: list[str] | None = None
    stream: StrictBool | None = None


class Provenance(BaseModel):
    """Where images or clips came from: what every image or sound file served carries in its metadata, and JSON
    answers as a field."""

    model_config = ConfigDict(frozen=True)

    model: str
    version: int
    source: Literal["seeds", "latents", "uploads"] = Field(
        description="What the images were drawn from: seeds, latents sent by the client, or uploaded images (VAEs)."
    )
    seeds: list[int] | None = Field(None, description="Each image's seed; an interpolation's keyframe seeds.")
    truncation: float | None = Field(None, description="Truncation psi applied to the latents (1: none).")
    labels: list[str] | None = Field(
        None,
        description="Conditional models: each image's class; an interpolation's class, or the two it blends.",
    )
    latent_scale: float = Field(description="The spread the generator samples its latents at.")
    frames: int | None = Field(None, description="Interpolations: the number of frames.")
    method: str | None = Field(None, description="Interpolations: slerp or lerp.")
    loop: bool | None = Field(None, description="Interpolations: whether the path returns to its start.")
    service_version: str = Field(description="The version of genserve that served the images.")
    digital_source_type: str = Field(
        description="IPTC's digital source type: trainedAlgorithmicMedia, or compositeWithTrainedAlgorithmicMedia "
        "for reconstructions shown beside their uploads."
    )


class GeneratedImage(BaseModel):
    seed: int | None
    png_base64: str
    latent: list[float] | None = None


class GenerateJSONResponse(BaseModel):
    model: str
    version: int
    width: int
    height: int
    channels: int
    images: list[GeneratedImage]
    provenance: Provenance | None = None


class GeneratedClip(BaseModel):
    seed: int | None
    label: str | None = Field(None, description="Conditional models: the clip's class.")
    wav_base64: str = Field(description="The clip as a 16-bit mono WAV carrying its provenance record.")
    sample_rate: int
    latent: list[float] | None = None


class GenerateAudioJSONResponse(BaseModel):
    model: str
    version: int
    sample_rate: int
    samples: int = Field(description="Samples per clip.")
    clips: list[GeneratedClip]
    provenance: Provenance | None = None


class TextCompletion(BaseModel):
    index: int
    seed: int
    text: str = Field(description="The continuation of the prompt (without it, and without a stop sequence).")
    finish_reason: str = Field(description="length, stop or end_of_text.")
    tokens: int


class GenerateTextResponse(BaseModel):
    model: str
    version: int
    prompt: str
    completions: list[TextCompletion]


class InterpolationFrame(BaseModel):
    position: float
    png_base64: str


class InterpolateJSONResponse(BaseModel):
    model: str
    version: int
    seeds: list[int] | None = Field(None, description="Keyframe seeds; null when the keyframes were uploads.")
    method: str
    frames: list[InterpolationFrame]
    provenance: Provenance | None = None


class EncodedImage(BaseModel):
    filename: str | None
    latent: list[float] = Field(description="The posterior mean: the image's point in latent space.")
    log_var: list[float] = Field(
        description="The posterior log-variance: how unsure the encoder is per dimension."
    )


class EncodeResponse(BaseModel):
    model: str
    version: int
    latent_dim: int
    images: list[EncodedImage]


class ReconstructedImage(BaseModel):
    filename: str | None
    png_base64: str
    latent: list[float]


class ReconstructJSONResponse(BaseModel):
    model: str
    version: int
    width: int
    height: int
    channels: int
    images: list[ReconstructedImage]
    provenance: Provenance | None = None


class VersionInfo(BaseModel):
    version: int
    status: str
    error: str | None = None
    kind: str | None = None
    latent_dim: int | None = None
    latent_scale: float | None = Field(
        None,
        description="GANs: the spread the generator samples at; latents you send are N(0, I) either way and "
        "the model multiplies them by this.",
    )
    image_shape: list[int] | None = None
    classes: list[str] | None = None
    dataset: str | None = None
    created: str | None = None
    source: str | None = Field(
        None,
        description="Where the version came from: `trained` by genserve, `imported` with `python -m training "
        "import`, or `inferred`: a bare SavedModel whose latent size, image shape and output range the service "
        "read from its signature and one probe call.",
    )
    origin: dict[str, Any] | None = Field(
        None,
        description="Imported and inferred versions: what the model was read from and what was inferred.",
    )
    device: str | None = None
    evaluation: dict[str, Any] | None = None
    capabilities: list[str] | None = Field(
        None,
        description="What the version can do: generate, interpolate, labels, label_blend, encode; text "
        "generators: generate_text, stream; sound generators: generate_audio, interpolate, labels.",
    )
    vocabulary_size: int | None = None
    sample_rate: int | None = Field(None, description="Sound generators: samples per second of their clips.")
    samples: int | None = Field(None, description="Sound generators: samples per clip.")
    seconds: float | None = Field(None, description="Sound generators: the length of one clip.")
    formats: list[str] | None = Field(
        None, description="The formats POST /generate answers for it, the default first."
    )
    batching: dict[str, int] | None = None
    model_calls: dict[str, Any] | None = Field(
        None,
        description="Image generators: the model call serving each batch bucket, chosen by measurement on this "
        "machine (`compiled` with XLA, or `plain`), with the times measured; `state` is `waiting`, `measuring` "
        "or `chosen` (absent with GENSERVE_COMPILED_CALLS=off).",
    )


class ModelInfo(BaseModel):
    name: str
    default: bool
    latest_available: int | None
    versions: list[VersionInfo]


class ModelList(BaseModel):
    default_model: str | None
    device: str
    models: list[ModelInfo]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
