"""The protocol benchmark's requests are what the service's own parsers accept, and its table adds up."""

from __future__ import annotations

import numpy as np

from app.protocols.inference import Signature, TensorSpec
from app.protocols.tfserving.rest import parse_predict_request
from app.protocols.v2 import codec as v2
from bench.loadgen import LoadSpec
from bench.protocols_bench import (
    GENERATE_PNG,
    TF_GRPC,
    V2_REST,
    HttpRequest,
    Measurement,
    Target,
    _tf_rest_predict,
    _v2_infer,
    summarize,
)
from genserve import store
from genserve.conventions import latents_from_seeds

TARGET = Target("http://127.0.0.1:1", "127.0.0.1:2", "digits", latent_dim=8)
SPEC = LoadSpec(TARGET.base_url, n=3, concurrency=2, duration_s=1.0, warmup_s=0.0)
SIGNATURE = Signature(
    [TensorSpec(store.LATENT_INPUT, np.dtype(np.float32), (-1, 8))],
    [TensorSpec(store.IMAGES_OUTPUT, np.dtype(np.uint8), (-1, 4, 4, 1))],
)


def header_value(request: HttpRequest, name: str) -> str:
    [value] = [line.split(": ", 1)[1] for line in request.headers.splitlines() if line.startswith(name)]
    return value


def test_v2_request_carries_the_seeds_latents_as_binary_data_and_asks_for_binary_images() -> None:
    request = _v2_infer(TARGET)(SPEC)(6)

    parsed = v2.parse_infer_request(request.body, header_value(request, v2.HEADER_LENGTH))

    assert request.path == "/v2/models/digits/infer"
    np.testing.assert_array_equal(parsed.tensors[store.LATENT_INPUT], latents_from_seeds(range(6, 9), 8))
    assert parsed.binary_outputs == {store.IMAGES_OUTPUT}


def test_tf_serving_rest_request_is_row_format_with_the_seeds_latents() -> None:
    request = _tf_rest_predict(TARGET)(SPEC)(3)

    parsed = parse_predict_request(request.body, SIGNATURE)

    assert request.path == "/v1/models/digits:predict" and parsed.row_format
    np.testing.assert_allclose(parsed.tensors[store.LATENT_INPUT], latents_from_seeds(range(3, 6), 8))


def test_table_gives_ratios_to_generate_and_grpcs_lead_over_the_fastest_other() -> None:
    def runs(*rates: float) -> list[Measurement]:
        return [Measurement(rate, 10.0, 20.0, 150.0, 5.0) for rate in rates]

    results = {
        (GENERATE_PNG, 1, 32): runs(100, 400, 200),  # median 200
        (V2_REST, 1, 32): runs(300, 300, 900),  # median 300
        (TF_GRPC, 1, 32): runs(450, 600, 100),  # median 450
    }

    table = summarize(results, [GENERATE_PNG, V2_REST, TF_GRPC])

    assert "| 1 | 32 | v2 REST (binary) | 300 | 1.50× |" in table
    assert "| 1 | 32 | TF Serving gRPC | 450 | 2.25× |" in table
    assert "gRPC 450 images/s = 1.50× the fastest other protocol (v2 REST (binary), 300)" in table
