"""Provenance: what every served image or sound file says about where it came from, built here and nowhere else.

One record (`schemas.Provenance`) describes an answer's images or clips: model and version, what they were drawn
from (seeds, latents or uploads), truncation, classes, latent scale, the service's version, and IPTC's digital
source type, the standard mark of media made by a trained model. The formats modules write it into each
container: a PNG's `genserve` iTXt chunk (the record as JSON) and its XMP packet, WebP's XMP chunk, a GIF's
comment (`app/image/formats.py`), a WAV's `LIST`/`INFO` chunk and a FLAC's comments (`app/audio/formats.py`), a
zip's `manifest.json` (`app/latent/formats.py`); JSON answers carry it as a field (their base64 PNGs stay bare:
embedding the record in each would double the size of a small image). It is built once per answer from what the
answer already holds: no model call, two short strings. `GENSERVE_IMAGE_METADATA=false` leaves it out.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterable
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

from app.api.schemas import Provenance
from app.latent.generation import Frames, Generated
from app.serving.registry import ModelVersion

IPTC_DIGITAL_SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED_ALGORITHMIC_MEDIA = IPTC_DIGITAL_SOURCE_TYPES + "trainedAlgorithmicMedia"
# Reconstructions shown beside the uploads they came from: trained-model output composited with other media.
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = IPTC_DIGITAL_SOURCE_TYPES + "compositeWithTrainedAlgorithmicMedia"
# The PNG text chunk holding the record as JSON.
PNG_TEXT_KEY = "genserve"
XMP_NAMESPACE = "urn:genserve:provenance:1/"

Source = Literal["seeds", "latents", "uploads"]


def _service_version() -> str:
    try:
        return importlib.metadata.version("genserve")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


SERVICE_VERSION = _service_version()


def of_generated(result: Generated, *, source: Source | None = None, composite: bool = False) -> Provenance:
    """The record of generated images or clips (one entry per output in `seeds` and `labels`)."""
    return _record(
        result.model_version,
        source=source or ("seeds" if result.seeds is not None else "latents"),
        seeds=result.seeds,
        truncation=result.truncation,
        labels=class_names(result.model_version, result.labels),
        digital_source_type=COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
        if composite
        else TRAINED_ALGORITHMIC_MEDIA,
    )


def of_frames(frames: Frames) -> Provenance:
    """The record of an interpolation: its keyframe seeds, frame count, path and class(es)."""
    return _record(
        frames.model_version,
        source="seeds" if frames.seeds is not None else "uploads",
        seeds=frames.seeds,
        truncation=frames.truncation,
        labels=class_names(frames.model_version, frames.classes),
        frames=len(frames.outputs),
        method=frames.method,
        loop=frames.loop,
    )


def provenance_fields(record: Provenance) -> dict[str, object]:
    """The record as JSON-ready fields, those that do not apply left out."""
    return record.model_dump(mode="json", exclude_none=True)


def json_text(record: Provenance) -> str:
    """The record as compact, ASCII-only JSON (a GIF comment must be 7-bit)."""
    return json.dumps(provenance_fields(record), separators=(",", ":"))


def xmp_packet(record: Provenance) -> str:
    """The record as an XMP packet: IPTC's digital source type and AI system, the creator tool, and genserve's own
    properties."""
    attributes = {
        "Iptc4xmpExt:DigitalSourceType": record.digital_source_type,
        "Iptc4xmpExt:AISystemUsed": record.model,
        "Iptc4xmpExt:AISystemVersionUsed": str(record.version),
        "xmp:CreatorTool": f"genserve {record.service_version}",
        "genserve:model": record.model,
        "genserve:version": str(record.version),
        "genserve:source": record.source,
        "genserve:truncation": _optional(record.truncation),
        "genserve:latentScale": str(record.latent_scale),
        "genserve:frames": _optional(record.frames),
        "genserve:method": _optional(record.method),
        "genserve:loop": _optional(None if record.loop is None else str(record.loop).lower()),
    }
    shown = " ".join(f"{name}={quoteattr(value)}" for name, value in attributes.items() if value is not None)
    arrays = _xmp_sequence("genserve:seeds", record.seeds) + _xmp_sequence("genserve:labels", record.labels)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:genserve="{XMP_NAMESPACE}" {shown}>{arrays}'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="r"?>'
    )


def _record(model_version: ModelVersion, **values: object) -> Provenance:
    return Provenance.model_validate(
        {
            "model": model_version.name,
            "version": model_version.version,
            "latent_scale": model_version.metadata.latent_scale,
            "service_version": SERVICE_VERSION,
            "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
            **values,
        }
    )


def class_names(model_version: ModelVersion, labels: Iterable[Any] | None) -> list[str] | None:
    """Class indices (an array or a tuple) as the model's class names."""
    if labels is None:
        return None
    names = model_version.metadata.class_names or []
    return [names[int(index)] for index in labels]


def _optional(value: object) -> str | None:
    return None if value is None else str(value)


def _xmp_sequence(name: str, values: list[int] | list[str] | None) -> str:
    if values is None:
        return ""
    items = "".join(f"<rdf:li>{escape(str(value))}</rdf:li>" for value in values)
    return f"<{name}><rdf:Seq>{items}</rdf:Seq></{name}>"
