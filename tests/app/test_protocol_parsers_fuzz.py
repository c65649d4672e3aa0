"""The protocol parsers against generated bodies: any input ends as tensors that pass the signature's checks or
as an `InvalidParameter` (a 400 naming a field), never as another exception (a 500).

The inference protocols' routes are outside the OpenAPI schema that `test_fuzz.py` explores, so their parsers
are fuzzed here directly: JSON close to a valid request (the right keys, wrong values), arbitrary JSON, and
binary tensor data with random lengths, checked against image and text signatures.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.protocols.inference import check_inputs
from app.protocols.tfserving.rest import parse_predict_request
from app.protocols.v2 import codec as v2
from app.server.errors import InvalidParameter
from genserve import store
from genserve.signatures import TEXT_SIGNATURE, Signature, TensorSpec

MAX_ROWS = 4
IMAGE_SIGNATURE = Signature(
    [
        TensorSpec(store.LATENT_INPUT, np.dtype(np.float32), (-1, 3)),
        TensorSpec(store.LABEL_INPUT, np.dtype(np.int32), (-1,)),
    ],
    [TensorSpec(store.IMAGES_OUTPUT, np.dtype(np.uint8), (-1, 2, 2, 1))],
)
SIGNATURES = (IMAGE_SIGNATURE, TEXT_SIGNATURE)
NAMES = [store.LATENT_INPUT, store.LABEL_INPUT, *TEXT_SIGNATURE.input_names(), "other"]
FUZZ = settings(
    max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=24,
)
shapes = st.lists(st.integers(min_value=-2, max_value=4), max_size=3) | json_values
datatypes = st.sampled_from([*v2.DATATYPES, "BYTES", "FP8", ""]) | json_values


@st.composite
def v2_tensors(draw: st.DrawFn) -> dict[str, Any]:
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(NAMES) | json_values),
        "datatype": draw(datatypes),
        "shape": draw(shapes),
    }
    if draw(st.booleans()):
        tensor["data"] = draw(json_values)
    if draw(st.booleans()):
        tensor["parameters"] = draw(
            st.fixed_dictionaries({"binary_data_size": st.integers(min_value=-1, max_value=40) | json_values})
            | json_values
        )
    return tensor


@st.composite
def v2_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    payload: Any = {"inputs": draw(st.lists(v2_tensors(), max_size=3))}
    if draw(st.booleans()):
        payload["outputs"] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        payload = draw(json_values)
    head = json.dumps(payload).encode()
    binary = draw(st.binary(max_size=48))
    header_length = str(len(head)) if binary or draw(st.booleans()) else None
    if draw(st.integers(0, 9)) == 0:
        header_length = draw(st.text(max_size=4))
    return head + binary, header_length


@st.composite
def tf_rest_bodies(draw: st.DrawFn) -> bytes:
    named = st.dictionaries(st.sampled_from(NAMES), json_values, max_size=4)
    payload: Any = draw(
        st.fixed_dictionaries({"instances": st.lists(named | json_values, max_size=4)})
        | st.fixed_dictionaries({"inputs": named | json_values})
        | json_values
    )
    if isinstance(payload, dict) and draw(st.booleans()):
        payload["signature_name"] = draw(st.sampled_from(["", "serving_default"]) | json_values)
    return json.dumps(payload).encode()


def assert_names_a_field(error: InvalidParameter) -> None:
    field, _, reason = str(error).partition(": ")
    assert field.strip() and reason, str(error)


def checked_or_refused(signature: Signature, tensors: dict[str, np.ndarray]) -> None:
    """The signature's checks accept `tensors` with bounded rows, or refuse them naming a field."""
    try:
        checked = check_inputs(signature, tensors, MAX_ROWS)
    except InvalidParameter as error:
        assert_names_a_field(error)
        return
    assert set(checked) <= set(signature.input_names())
    assert all(1 <= len(array) <= MAX_ROWS for array in checked.values() if array.ndim)


@FUZZ
@given(v2_bodies(), st.sampled_from(SIGNATURES))
def test_v2_infer_bodies_are_parsed_or_refused_by_field(
    body: tuple[bytes, str | None], signature: Signature
) -> None:
    try:
        parsed = v2.parse_infer_request(*body)
    except InvalidParameter as error:
        assert_names_a_field(error)
        return
    checked_or_refused(signature, parsed.tensors)


@FUZZ
@given(tf_rest_bodies(), st.sampled_from(SIGNATURES))
def test_tf_serving_predict_bodies_are_parsed_or_refused_by_field(body: bytes, signature: Signature) -> None:
    try:
        parsed = parse_predict_request(body, signature)
    except InvalidParameter as error:
        assert_names_a_field(error)
        return
    checked_or_refused(signature, parsed.tensors)


def test_the_fuzzer_reaches_valid_requests() -> None:
    """The generators above can produce requests that pass every check (so the fuzz is not all refusals)."""
    latents = {"name": store.LATENT_INPUT, "datatype": "FP32", "shape": [1, 3], "data": [0.5, 0, 1]}
    labels = {"name": store.LABEL_INPUT, "datatype": "INT32", "shape": [1], "data": [2]}
    parsed = v2.parse_infer_request(json.dumps({"inputs": [latents, labels]}).encode(), None)
    checked = check_inputs(IMAGE_SIGNATURE, parsed.tensors, MAX_ROWS)
    assert checked[store.LATENT_INPUT].dtype == np.float32 and checked[store.LABEL_INPUT].tolist() == [2]

    rest = parse_predict_request(json.dumps({"instances": [{"prompt": "ab"}]}).encode(), TEXT_SIGNATURE)
    assert check_inputs(TEXT_SIGNATURE, rest.tensors, MAX_ROWS)[store.PROMPT_INPUT].tolist() == [b"ab"]


def test_a_blank_or_odd_tensor_name_is_refused_under_the_field_that_holds_it() -> None:
    bodies = [
        (lambda: parse_predict_request(b'{"inputs": {"": [1]}}', IMAGE_SIGNATURE), "inputs"),
        (lambda: parse_predict_request(b'{"instances": [{"z z": [1]}]}', IMAGE_SIGNATURE), "instances"),
        (lambda: v2.parse_infer_request(b'{"inputs": [{"name": "", "datatype": "FP32"}]}', None), "inputs"),
    ]
    for parse, field in bodies:
        try:
            parse()
        except InvalidParameter as error:
            assert str(error).startswith(f"{field}: tensor names are"), str(error)
        else:
            raise AssertionError(f"accepted a bad tensor name in {field}")
