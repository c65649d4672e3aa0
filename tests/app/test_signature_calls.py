"""Signature calls: the fast call answers exactly as TensorFlow's public call, and the public call is kept
whenever a faster one cannot be trusted."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.serving.signature_calls import signature_call
from genserve import store

CHOSEN = "signature calls use the %s"


def loaded_signature(model_store: Path, name: str) -> Any:
    import tensorflow as tf

    model = store.list_models(model_store)[0]
    latest = store.latest_version(model_store, model)
    assert latest is not None
    version = store.version_dir(model_store, model, latest)
    loaded = tf.saved_model.load(str(version))
    signature = loaded.signatures[name]
    signature.owner = loaded  # keeps the variables alive as long as the signature
    return signature


def random_inputs(signature: Any, rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for name, spec in signature.structured_input_signature[1].items():
        shape = (rows, *spec.shape.as_list()[1:])
        if spec.dtype.is_floating:
            inputs[name] = rng.standard_normal(shape).astype(np.float32)
        elif spec.dtype.name == "uint8":
            inputs[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            inputs[name] = rng.integers(0, 3, shape).astype(spec.dtype.as_numpy_dtype)
    return inputs


def public_outputs(signature: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    outputs = signature(**{name: tf.constant(array) for name, array in inputs.items()})
    return {name: tensor.numpy() for name, tensor in outputs.items()}


def outputs_of(call: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in call(inputs).items()}


def chosen(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage().removeprefix(CHOSEN % "") for record in caplog.records if record.msg == CHOSEN
    ]


@pytest.fixture(
    params=[
        ("tiny_conditional_store", store.SIGNATURE_NAME),
        ("tiny_conditional_store", store.FROM_EMBEDDING_SIGNATURE),
        ("tiny_vae_store", store.SIGNATURE_NAME),
        ("tiny_vae_store", store.ENCODE_SIGNATURE),
    ],
    ids=["generator with labels", "from label embeddings", "vae decoder", "vae encoder"],
)
def signature(request: pytest.FixtureRequest) -> Any:
    fixture, name = request.param
    return loaded_signature(request.getfixturevalue(fixture), name)


def assert_answers_as_the_public_call(
    signature: Any, on_cpu: bool, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="app.serving.signature_calls"):
        call = signature_call(signature, on_cpu=on_cpu)
    assert chosen(caplog) == [kind]
    for rows, seed in [(1, 1), (3, 2), (17, 3)]:
        inputs = random_inputs(signature, rows, seed)
        actual, expected = outputs_of(call, inputs), public_outputs(signature, inputs)
        assert actual.keys() == expected.keys()
        for name in expected:
            assert actual[name].shape[0] == rows
            np.testing.assert_array_equal(actual[name], expected[name])


def test_on_a_cpu_the_flat_call_on_one_thread_answers_exactly_as_the_public_call(
    signature: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert_answers_as_the_public_call(signature, True, "flat call on one thread", caplog)


def test_on_a_gpu_the_flat_call_answers_exactly_as_the_public_call(
    tiny_conditional_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    signature = loaded_signature(tiny_conditional_store, store.SIGNATURE_NAME)
    assert_answers_as_the_public_call(signature, False, "flat call", caplog)


class Tampered:
    """A signature whose flat call answers one level off, or which has no flat call at all."""

    def __init__(self, signature: Any, *, flat: bool) -> None:
        self._signature = signature
        self.structured_input_signature = signature.structured_input_signature
        self.captured_inputs = signature.captured_inputs
        if flat:
            self._call_flat = self._off_by_one

    def __call__(self, **tensors: Any) -> Any:
        return self._signature(**tensors)

    def _off_by_one(self, tensors: list[Any], captured: list[Any]) -> dict[str, Any]:
        return {name: tensor + 1 for name, tensor in self._signature._call_flat(tensors, captured).items()}


@pytest.mark.parametrize("flat", [True, False], ids=["flat call answers differently", "no flat call"])
def test_the_public_call_is_kept_when_no_faster_call_answers_the_same(
    tiny_conditional_store: Path, flat: bool, caplog: pytest.LogCaptureFixture
) -> None:
    signature = loaded_signature(tiny_conditional_store, store.SIGNATURE_NAME)
    tampered = Tampered(signature, flat=flat)
    with caplog.at_level(logging.DEBUG, logger="app.serving.signature_calls"):
        call = signature_call(tampered, on_cpu=True)
    assert chosen(caplog) == []
    inputs = random_inputs(signature, 5, 4)
    np.testing.assert_array_equal(
        outputs_of(call, inputs)[store.IMAGES_OUTPUT], public_outputs(signature, inputs)[store.IMAGES_OUTPUT]
    )
