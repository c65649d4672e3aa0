"""Publish a generator trained elsewhere as a version of the store (``python -m training import``).

The source is a Keras 3 ``.keras`` file, a Keras 2 ``.h5`` file or a SavedModel folder (its ``serving_default``
signature or another one). Its inputs and output are read from the model: one latent input ``[None, D]``, an
optional class input (``label_input``), and an image output ``[None, H, W, C]`` or ``[None, H, W]``; the output's
range (`genserve.outputs`) is given or found by one probe call. The model is wrapped in the store's serving graph
(`training.serving_graph.GeneratorServer`: latents scaled, pixels converted to uint8 inside the graph, the
contract's signature and tensor names), probed at batch sizes 1 and 17 before and after saving, and published
atomically with ``source: imported`` and what was read and inferred in ``origin``. An encoder (image to mean and
log-variance) makes the version a VAE.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from genserve import outputs as model_outputs
from genserve.conventions import cycled_labels
from genserve.outputs import OutputRange
from genserve.store import (
    IMAGES_OUTPUT,
    LABEL_INPUT,
    LATENT_INPUT,
    SIGNATURE_NAME,
    ModelKind,
    ModelMetadata,
    publish_version,
)
from training.metadata import framework_versions
from training.provenance import content_hash
from training.serving_graph import GeneratorServer

logger = logging.getLogger(__name__)

SourceFormat = Literal["keras", "h5", "saved_model"]
# Batch sizes every imported version is called at before it is published: one image, and an odd larger batch.
PROBE_BATCH_SIZES = (1, 17)
_UNKNOWN_CLASS = re.compile(r"Could not locate (?:class|function) '([^']+)'")


@dataclass(frozen=True)
class ImportOptions:
    """What `import_generator` publishes and how it reads the source; the CLI only fills it."""

    name: str
    store: Path = Path("model_store")
    signature: str = SIGNATURE_NAME
    label_input: str | None = None
    classes: int | None = None
    class_names: list[str] | None = None
    encoder: Path | None = None
    output_range: OutputRange | Literal["auto"] = "auto"
    custom_objects: Path | None = None
    dataset: str = "imported"


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a source model: its name, dims (None where any size goes) and dtype."""

    name: str
    dims: tuple[int | None, ...]
    dtype: tf.DType

    def shown(self) -> str:
        return (
            f"{self.name} {self.dtype.name} [{', '.join('None' if d is None else str(d) for d in self.dims)}]"
        )


@dataclass
class Source:
    """A loaded model as the importer sees it: its inputs and outputs, and a call by input name."""

    path: Path
    format: SourceFormat
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    call: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]
    # What owns the variables the call reads (a Keras model or a loaded SavedModel), saved with the version.
    owner: Any = field(repr=False, default=None)


def load_source(path: Path, signature: str = SIGNATURE_NAME, custom_objects: Path | None = None) -> Source:
    """The model in `path` (``.keras``, ``.h5`` or a SavedModel folder), or ValueError saying how to fix it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    if path.is_dir():
        return _saved_model_source(path, signature)
    suffix = path.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise ValueError(
            f"{path.name!r} is not a model file this command reads: a Keras .keras file, a Keras 2 .h5 file, "
            "or a SavedModel folder"
        )
    objects = _custom_objects(custom_objects) if custom_objects is not None else {}
    try:
        model = keras.models.load_model(path, custom_objects=objects, compile=False)
    except (TypeError, ValueError) as error:
        unknown = _UNKNOWN_CLASS.search(str(error))
        if unknown:
            raise ValueError(
                f"the model uses {unknown.group(1)!r}, a custom layer or function Keras does not know: pass "
                "--custom-objects FILE.py, a Python file that defines it"
            ) from None
        raise ValueError(f"Keras cannot load {path.name!r}: {error}") from None
    return _keras_source(path, model, "keras" if suffix == ".keras" else "h5")


def _custom_objects(file: Path) -> dict[str, Any]:
    """The classes and functions a Python file defines (or its ``CUSTOM_OBJECTS`` dict), by name."""
    if not Path(file).is_file():
        raise FileNotFoundError(f"--custom-objects {str(file)!r} is not a file")
    spec = importlib.util.spec_from_file_location(f"genserve_custom_objects_{Path(file).stem}", file)
    if spec is None or spec.loader is None:
        raise ValueError(f"--custom-objects {str(file)!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    named = getattr(module, "CUSTOM_OBJECTS", None)
    if isinstance(named, dict):
        return dict(named)
    return {
        name: value
        for name, value in vars(module).items()
        if callable(value) and getattr(value, "__module__", None) == spec.name and not name.startswith("_")
    }


def _keras_source(path: Path, model: keras.Model, source_format: SourceFormat) -> Source:
    inputs = [_keras_tensor(tensor) for tensor in model.inputs]
    outputs = [_keras_tensor(tensor) for tensor in model.outputs]
    input_names = [info.name for info in inputs]
    output_names = [info.name for info in outputs]

    def call(feed: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        given = [feed[name] for name in input_names]
        answer = model(given if len(given) > 1 else given[0], training=False)
        answers = answer if isinstance(answer, list | tuple) else [answer]
        return dict(zip(output_names, answers, strict=True))

    return Source(path, source_format, inputs, outputs, call, owner=model)


def _keras_tensor(tensor: Any) -> TensorInfo:
    name = str(getattr(tensor, "name", "") or "").split(":")[0]
    return TensorInfo(name, tuple(tensor.shape), tf.as_dtype(tensor.dtype))


def _saved_model_source(path: Path, signature_name: str) -> Source:
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:  # TensorFlow raises many types for a folder that is not a SavedModel
        raise ValueError(f"{path.name!r} is not a SavedModel TensorFlow can load: {error}") from None
    signature = loaded.signatures.get(signature_name)
    if signature is None:
        names = ", ".join(sorted(loaded.signatures)) or "none"
        raise ValueError(
            f"the SavedModel has no {signature_name!r} signature (it has: {names}): pass --signature NAME"
        )
    inputs = [
        TensorInfo(name, tuple(spec.shape.as_list()), spec.dtype)
        for name, spec in sorted(signature.structured_input_signature[1].items())
    ]
    outputs = [
        TensorInfo(name, tuple(spec.shape.as_list()), spec.dtype)
        for name, spec in sorted(signature.structured_outputs.items())
    ]

    def call(feed: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return dict(signature(**feed))

    return Source(path, "saved_model", inputs, outputs, call, owner=loaded)


@dataclass(frozen=True)
class GeneratorLayout:
    """Which of a source's tensors are the latent, the class and the image, and the sizes they give."""

    latent: TensorInfo
    label: TensorInfo | None
    image: TensorInfo
    latent_dim: int
    image_shape: tuple[int, int, int]


def generator_layout(source: Source, label_input: str | None = None) -> GeneratorLayout:
    """The latent, class and image tensors of `source`, or ValueError naming the problem and the fix."""
    label = None
    if label_input is not None:
        label = next((info for info in source.inputs if info.name == label_input), None)
        if label is None:
            raise ValueError(
                f"--label-input {label_input!r} is not an input of the model; its inputs: {_listed(source.inputs)}"
            )
        if label.dims[1:] not in ((), (1,)):
            raise ValueError(
                f"the class input {label.shown()} must take one class per image: [None] or [None, 1]"
            )
    others = [info for info in source.inputs if info is not label]
    latents = [info for info in others if info.dtype.is_floating and model_outputs.latent_length(info.dims)]
    if len(latents) > 1:
        raise ValueError(
            f"more than one latent-like input ({_listed(latents)}): a generator takes one latent [None, D]; name "
            "a class input with --label-input"
        )
    if len(latents) != 1 or len(others) != 1:
        raise ValueError(
            f"the model's inputs ({_listed(source.inputs)}) are not one latent [None, D]"
            + ("" if label is not None else " (and, with --label-input, one class input)")
        )
    images = [info for info in source.outputs if info.dtype.is_floating or info.dtype == tf.uint8]
    shaped = [info for info in images if len(info.dims) in (3, 4)]
    if len(shaped) != 1:
        raise ValueError(
            f"the model's outputs ({_listed(source.outputs)}) are not one image [None, H, W, C] or [None, H, W]"
        )
    latent_dim = model_outputs.latent_length(latents[0].dims)
    assert latent_dim is not None
    return GeneratorLayout(
        latents[0], label, shaped[0], latent_dim, model_outputs.image_shape(shaped[0].dims)
    )


def _listed(infos: list[TensorInfo]) -> str:
    return ", ".join(info.shown() for info in infos) or "none"


class ImportedGenerator(tf.Module):
    """A source generator behind the call `GeneratorServer` makes: ``z`` (and ``[z, label]``) to images in [-1, 1]."""

    def __init__(self, source: Source, layout: GeneratorLayout, output_range: OutputRange) -> None:
        super().__init__(name="imported_generator")
        self.model = source.owner
        self._call = source.call
        self._layout = layout
        self._range = output_range

    def __call__(self, inputs: Any, training: bool = False) -> tf.Tensor:
        layout = self._layout
        if layout.label is not None:
            latents, labels = inputs
            feed = {layout.latent.name: latents, layout.label.name: _as_class_input(labels, layout.label)}
        else:
            feed = {layout.latent.name: inputs}
        feed[layout.latent.name] = tf.cast(feed[layout.latent.name], layout.latent.dtype)
        images = tf.cast(self._call(feed)[layout.image.name], tf.float32)
        images = tf.reshape(images, [-1, *layout.image_shape])
        return model_outputs.to_unit_range(images, self._range)


def _as_class_input(labels: tf.Tensor, info: TensorInfo) -> tf.Tensor:
    labels = tf.cast(labels, info.dtype)
    return labels[:, tf.newaxis] if len(info.dims) == 2 else labels


class ImportedEncoder(tf.Module):
    """A source encoder behind the call `GeneratorServer` makes: images in [-1, 1] to (mean, log-variance)."""

    def __init__(
        self, source: Source, image_shape: tuple[int, int, int], latent_dim: int, output_range: OutputRange
    ) -> None:
        super().__init__(name="imported_encoder")
        self.model = source.owner
        self.image_shape = image_shape
        self._call = source.call
        self._range = output_range
        self._input, self._mean, self._log_var = _encoder_layout(source, image_shape, latent_dim)

    def __call__(self, images: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        values = model_outputs.from_unit_range(images, self._range)
        values = tf.reshape(tf.cast(values, self._input.dtype), [-1, *self._input.dims[1:]])
        answers = self._call({self._input.name: values})
        return tf.cast(answers[self._mean], tf.float32), tf.cast(answers[self._log_var], tf.float32)


def _encoder_layout(
    source: Source, image_shape: tuple[int, int, int], latent_dim: int
) -> tuple[TensorInfo, str, str]:
    """The encoder's image input and its mean and log-variance outputs' names, checked against the decoder."""
    if len(source.inputs) != 1 or model_outputs.image_shape(source.inputs[0].dims) != image_shape:
        raise ValueError(
            f"the encoder's inputs ({_listed(source.inputs)}) are not one image of the decoder's shape "
            f"{list(image_shape)}"
        )
    latents = [info for info in source.outputs if tuple(info.dims[1:]) == (latent_dim,)]
    if source.format == "saved_model":
        mean = next((info.name for info in latents if "mean" in info.name), None)
        log_var = next((info.name for info in latents if "var" in info.name), None)
        if mean is None or log_var is None:
            raise ValueError(
                f"the encoder's outputs ({_listed(source.outputs)}) do not name a mean and a log-variance of "
                f"[None, {latent_dim}] (names holding 'mean' and 'var')"
            )
        return source.inputs[0], mean, log_var
    if len(latents) < 2 or source.outputs[:2] != latents[:2]:
        raise ValueError(
            f"the encoder's outputs ({_listed(source.outputs)}) do not start with a mean and a log-variance of "
            f"[None, {latent_dim}]"
        )
    return source.inputs[0], latents[0].name, latents[1].name


def probe_output_range(
    source: Source, layout: GeneratorLayout, classes: int
) -> tuple[OutputRange, dict[str, float]]:
    """The output range found from one call on standard-normal latents, and the span of values seen."""
    latents = model_outputs.probe_latents(layout.latent_dim)
    feed = {layout.latent.name: tf.constant(latents, dtype=layout.latent.dtype)}
    if layout.label is not None:
        feed[layout.label.name] = _as_class_input(
            tf.constant(cycled_labels(len(latents), classes)), layout.label
        )
    values = np.asarray(source.call(feed)[layout.image.name])
    found = model_outputs.infer_output_range(values)
    return found, {"min": float(values.min()), "max": float(values.max())}


def import_generator(path: Path, options: ImportOptions) -> Path:
    """Publish the generator in `path` as the next version of `options.name`; return the version folder."""
    source = load_source(path, options.signature, options.custom_objects)
    layout = generator_layout(source, options.label_input)
    class_names = _class_names(options, layout)
    classes = len(class_names or [])
    found, span = probe_output_range(source, layout, max(classes, 1))
    if options.output_range != "auto" and found == "uint8" and options.output_range != "uint8":
        raise ValueError(f"the model outputs uint8 pixels, not --output-range {options.output_range}")
    output_range: OutputRange = found if options.output_range == "auto" else options.output_range
    encoder = None
    if options.encoder is not None:
        encoder_source = load_source(options.encoder, options.signature, options.custom_objects)
        encoder = ImportedEncoder(encoder_source, layout.image_shape, layout.latent_dim, output_range)
    server = GeneratorServer(
        ImportedGenerator(source, layout, output_range),
        layout.latent_dim,
        conditional=layout.label is not None,
        encoder=encoder,
        blend_classes=False,
    )
    probes = _probe(server, layout, classes)
    metadata = ModelMetadata(
        name=options.name,
        kind=_kind(layout, encoder is not None),
        latent_dim=layout.latent_dim,
        image_shape=layout.image_shape,
        channels=layout.image_shape[2],
        class_names=class_names,
        dataset=options.dataset,
        epochs=0,
        framework_versions=framework_versions(),
        source="imported",
        origin=_origin(source, layout, options, output_range, span),
    )

    def write_model(folder: Path) -> None:
        tf.saved_model.save(server, str(folder), signatures=server.signatures())
        _check_saved(folder, probes)

    version = publish_version(options.store, metadata, write_model)
    logger.info("published %s (%s, %s outputs)", version, metadata.kind, output_range)
    return version


def _class_names(options: ImportOptions, layout: GeneratorLayout) -> list[str] | None:
    if layout.label is None:
        if options.classes is not None or options.class_names is not None:
            raise ValueError("--classes and --class-names describe a class input: name it with --label-input")
        return None
    if options.class_names is not None:
        if options.classes is not None and options.classes != len(options.class_names):
            raise ValueError(
                f"--classes {options.classes} but --class-names names {len(options.class_names)} classes"
            )
        if len(options.class_names) < 2:
            raise ValueError("--class-names needs at least two names")
        return list(options.class_names)
    if options.classes is None or options.classes < 2:
        raise ValueError("a model with a class input needs --classes N (at least 2) or --class-names a,b,c")
    return [str(index) for index in range(options.classes)]


def _kind(layout: GeneratorLayout, has_encoder: bool) -> ModelKind:
    if has_encoder:
        if layout.label is not None:
            raise ValueError("an encoder goes with an unconditional decoder: drop --label-input or --encoder")
        return "vae"
    return "cdcgan" if layout.label is not None else "dcgan"


def _probe_inputs(layout: GeneratorLayout, classes: int, rows: int) -> dict[str, tf.Tensor]:
    inputs = {LATENT_INPUT: tf.constant(model_outputs.probe_latents(layout.latent_dim, rows))}
    if layout.label is not None:
        inputs[LABEL_INPUT] = tf.constant(cycled_labels(rows, classes))
    return inputs


Probes = list[tuple[dict[str, tf.Tensor], np.ndarray]]


def _probe(server: GeneratorServer, layout: GeneratorLayout, classes: int) -> Probes:
    """The wrapped model's inputs and images at each probe batch size, checked: uint8 of the image shape."""
    probes = []
    for rows in PROBE_BATCH_SIZES:
        inputs = _probe_inputs(layout, classes, rows)
        images = np.asarray(server.serve(**inputs)[IMAGES_OUTPUT])
        if images.shape != (rows, *layout.image_shape) or images.dtype != np.uint8:
            raise ValueError(
                f"the wrapped model answered {images.dtype} {list(images.shape)} for {rows} latents, not uint8 "
                f"{[rows, *layout.image_shape]}"
            )
        probes.append((inputs, images))
    return probes


def _check_saved(folder: Path, probes: Probes) -> None:
    """The saved SavedModel answers the probes as the model in memory did (within one pixel level)."""
    signature = tf.saved_model.load(str(folder)).signatures[SIGNATURE_NAME]
    for inputs, expected in probes:
        images = np.asarray(signature(**inputs)[IMAGES_OUTPUT])
        difference = np.abs(images.astype(np.int16) - expected.astype(np.int16)).max()
        if images.shape != expected.shape or difference > 1:
            raise ValueError("the saved model does not answer as the model in memory: it cannot be imported")


def _origin(
    source: Source,
    layout: GeneratorLayout,
    options: ImportOptions,
    output_range: OutputRange,
    span: dict[str, float],
) -> dict[str, Any]:
    origin: dict[str, Any] = {
        "file": source.path.name,
        "format": source.format,
        "sha256": content_hash(source.path),
        "latent_input": layout.latent.name,
        "image_output": layout.image.name,
        "output_range": output_range,
        "output_range_inferred": options.output_range == "auto",
        "probe_output_span": span,
    }
    if source.format == "saved_model":
        origin["signature"] = options.signature
    if layout.label is not None:
        origin["label_input"] = layout.label.name
    if options.encoder is not None:
        origin["encoder"] = {
            "file": Path(options.encoder).name,
            "sha256": content_hash(Path(options.encoder)),
        }
    return origin
