"""The one signature spec: what the exporters write, what the docs say, what the protocols describe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tensorflow as tf

from genserve import store
from genserve.signatures import (
    TEXT_SIGNATURE,
    TensorSpec,
    describe,
    dtype_name,
    image_signature,
    image_signature_of,
)

ROOT = Path(__file__).resolve().parents[2]
# Sizes no model has, standing for the docs' names of them.
LATENT_DIM, HEIGHT, WIDTH, CHANNELS = 1001, 1002, 1003, 1004
SIZE_NAMES = {LATENT_DIM: "latent_dim", HEIGHT: "H", WIDTH: "W", CHANNELS: "C"}


def _protocols_page() -> str:
    return " ".join((ROOT / "docs" / "protocols.md").read_text().split())


def _store_table() -> str:
    page = (ROOT / "docs" / "model-store.md").read_text()
    table = page[page.index("## The model store") :]
    return " ".join(table[: table.index("```", table.index("```") + 3)].split())


def test_the_documented_store_table_states_the_image_signature() -> None:
    signature = image_signature_of(LATENT_DIM, (HEIGHT, WIDTH, CHANNELS), conditional=True)
    table = _store_table()

    for spec in [*signature.inputs, *signature.outputs]:
        assert describe(spec, SIZE_NAMES) in table, describe(spec, SIZE_NAMES)


def test_the_protocols_page_states_the_text_signature() -> None:
    readme = _protocols_page()

    for spec in [*TEXT_SIGNATURE.inputs, *TEXT_SIGNATURE.outputs]:
        assert re.search(rf"`{spec.name}` {dtype_name(spec.dtype)}\b", readme), spec.name


def _matches(spec: TensorSpec, given: tf.TensorSpec, *, scalar: bool = False) -> bool:
    shape = [] if scalar else [None if size == -1 else size for size in spec.shape]
    return given.dtype.name == dtype_name(spec.dtype) and given.shape.as_list() == shape


@pytest.mark.parametrize("store_fixture", ["tiny_store", "tiny_conditional_store", "tiny_vae_store"])
def test_exported_image_generators_have_the_spec_signature(
    store_fixture: str, request: pytest.FixtureRequest
) -> None:
    root: Path = request.getfixturevalue(store_fixture)
    name = store.list_models(root)[0]
    version = store.version_dir(root, name, store.latest_version(root, name) or 0)
    spec = image_signature(store.read_metadata(version))
    signature = tf.saved_model.load(str(version)).signatures[store.SIGNATURE_NAME]

    inputs = signature.structured_input_signature[1]
    assert sorted(inputs) == sorted(spec.input_names())
    assert all(_matches(want, inputs[want.name]) for want in spec.inputs)
    images = signature.structured_outputs[store.IMAGES_OUTPUT]
    assert _matches(spec.outputs[0], images)


def test_an_exported_text_generator_has_the_spec_signature_one_value_a_call(tiny_text_version: Path) -> None:
    signature = tf.saved_model.load(str(tiny_text_version)).signatures[store.SIGNATURE_NAME]

    inputs = signature.structured_input_signature[1]
    assert sorted(inputs) == sorted(TEXT_SIGNATURE.input_names())
    assert all(_matches(want, inputs[want.name], scalar=True) for want in TEXT_SIGNATURE.inputs)
    assert _matches(TEXT_SIGNATURE.outputs[0], signature.structured_outputs[store.TEXT_OUTPUT], scalar=True)
