"""``python -m bench protocols``: the same images through each protocol genserve speaks, in one run.

One genserve process (the bundled store, its gRPC port on) answers the same work — `n` images from seeded
latents of the default model — through five request shapes, each driven by the same closed-loop client in
this process (one kept-alive connection per concurrent caller; gRPC multiplexes them over one channel, as
its clients do):

- `/generate` PNG: ``POST /generate?n=N&seed=S&format=png`` (what a browser or a curl user asks for);
- `/generate` npy: the same images as a raw uint8 array;
- v2 REST: ``POST /v2/models/NAME/infer`` with the latents as binary tensor data and the images back as binary
  data (what `tritonclient` sends and asks for by default);
- TF Serving REST: ``POST /v1/models/NAME:predict`` with ``instances`` and JSON ``predictions``;
- TF Serving gRPC: ``PredictionService/Predict`` with `tensor_content` in and out.

Every cell (n, concurrency) is measured for each protocol in turn, round after round with the order rotated,
so a noisy moment hits them alike; the table gives medians of images/s, p50 and p99 latency, and the CPU of
the server and of the client over each run. The client's CPU is part of the price of a protocol: it runs on
the same two cores as the server here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.loadgen import (
    HttpConnection,
    LoadResult,
    LoadSpec,
    OpenSenders,
    Send,
    http_connections,
    median_of_present,
    run_senders,
)
from bench.processes import free_port, running_service, service_env, tree_cpu_s
from genserve import store
from genserve.conventions import latents_from_seeds

ROOT = Path(__file__).resolve().parent.parent
HAS_GOALS = False
MODEL = "mnist-dcgan"
CELLS = ((1, 32), (16, 32))
GENERATE_PNG = "/generate PNG"
GENERATE_NPY = "/generate npy"
V2_REST = "v2 REST (binary)"
TF_REST = "TF Serving REST"
TF_GRPC = "TF Serving gRPC"
PROTOCOLS = (GENERATE_PNG, GENERATE_NPY, V2_REST, TF_REST, TF_GRPC)
# Protocol request bodies are built once for a cycle of this many seeds.
_CYCLE = 64

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurement:
    images_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_pct: float | None
    client_cpu_pct: float


@dataclass(frozen=True)
class Target:
    base_url: str
    grpc_address: str
    model: str
    latent_dim: int


def _latents(target: Target, n: int, seed: int) -> np.ndarray:
    return latents_from_seeds(range(seed, seed + n), target.latent_dim)


@dataclass(frozen=True)
class HttpRequest:
    path: str
    body: bytes = b""
    headers: str = ""  # extra header lines, each ending in CRLF


def _http_senders(requests: Callable[[LoadSpec], Callable[[int], HttpRequest]]) -> OpenSenders:
    """One sender per kept-alive connection, POSTing what `requests(spec)` builds for each seed."""

    @contextlib.asynccontextmanager
    async def open_senders(spec: LoadSpec) -> AsyncIterator[list[Send]]:
        request_for = requests(spec)
        async with http_connections(spec) as connections:
            yield [_sender(connection, request_for) for connection in connections]

    return open_senders


def _sender(connection: HttpConnection, request_for: Callable[[int], HttpRequest]) -> Send:
    async def send(seed: int) -> bool:
        request = request_for(seed)
        return await connection.post(request.path, request.body, request.headers)

    return send


def _prebuilt(spec: LoadSpec, build: Callable[[int], HttpRequest]) -> Callable[[int], HttpRequest]:
    """Requests built once for a cycle of seeds, so that the client spends its time sending."""
    cycle = [build(index * spec.n) for index in range(_CYCLE)]
    return lambda seed: cycle[(seed // spec.n) % _CYCLE]


def _generate(fmt: str) -> Callable[[LoadSpec], Callable[[int], HttpRequest]]:
    return lambda spec: lambda seed: HttpRequest(f"/generate?n={spec.n}&seed={seed}&format={fmt}")


def _v2_infer(target: Target) -> Callable[[LoadSpec], Callable[[int], HttpRequest]]:
    def build(spec: LoadSpec, seed: int) -> HttpRequest:
        latents = _latents(target, spec.n, seed)
        header = {
            "inputs": [
                {
                    "name": store.LATENT_INPUT,
                    "datatype": "FP32",
                    "shape": list(latents.shape),
                    "parameters": {"binary_data_size": latents.nbytes},
                }
            ],
            "outputs": [{"name": store.IMAGES_OUTPUT, "parameters": {"binary_data": True}}],
        }
        head = json.dumps(header).encode()
        headers = (
            f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(head)}\r\n"
        )
        body = head + latents.astype("<f4").tobytes()
        return HttpRequest(f"/v2/models/{target.model}/infer", body, headers)

    return lambda spec: _prebuilt(spec, lambda seed: build(spec, seed))


def _tf_rest_predict(target: Target) -> Callable[[LoadSpec], Callable[[int], HttpRequest]]:
    def build(spec: LoadSpec, seed: int) -> HttpRequest:
        body = json.dumps({"instances": _latents(target, spec.n, seed).tolist()}).encode()
        return HttpRequest(f"/v1/models/{target.model}:predict", body, "Content-Type: application/json\r\n")

    return lambda spec: _prebuilt(spec, lambda seed: build(spec, seed))


def _grpc_senders(target: Target) -> OpenSenders:
    import grpc
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    def request(n: int, seed: int) -> predict_pb2.PredictRequest:
        latents = _latents(target, n, seed)
        shape = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in latents.shape]
        )
        message = predict_pb2.PredictRequest()
        message.model_spec.name = target.model
        message.inputs[store.LATENT_INPUT].CopyFrom(
            tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=latents.astype("<f4").tobytes()
            )
        )
        return message

    @contextlib.asynccontextmanager
    async def open_senders(spec: LoadSpec) -> AsyncIterator[list[Send]]:
        requests = [request(spec.n, index * spec.n) for index in range(_CYCLE)]
        async with grpc.aio.insecure_channel(target.grpc_address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            async def send(seed: int) -> bool:
                try:
                    await stub.Predict(requests[(seed // spec.n) % _CYCLE], timeout=60)
                except grpc.aio.AioRpcError:
                    return False
                return True

            yield [send] * spec.concurrency

    return open_senders


def senders_for(protocol: str, target: Target) -> OpenSenders:
    if protocol == TF_GRPC:
        return _grpc_senders(target)
    requests = {
        GENERATE_PNG: _generate("png"),
        GENERATE_NPY: _generate("npy"),
        V2_REST: _v2_infer(target),
        TF_REST: _tf_rest_predict(target),
    }
    return _http_senders(requests[protocol])


def measure(
    protocol: str, target: Target, pid: int, n: int, concurrency: int, duration_s: float
) -> Measurement:
    spec = LoadSpec(target.base_url, n, concurrency, duration_s, warmup_s=1.0)
    before = tree_cpu_s(pid)
    result: LoadResult = run_senders(spec, senders_for(protocol, target))
    after = tree_cpu_s(pid)
    server_cpu = None if before is None or after is None else 100 * (after - before) / result.wall_s
    if result.errors:
        logger.warning("%s n=%d c=%d: %d errors", protocol, n, concurrency, result.errors)
    return Measurement(
        result.requests_per_s * n, result.p50_ms, result.p99_ms, server_cpu, result.client_cpu_pct
    )


@contextlib.contextmanager
def serving(store_path: Path, model: str, folder: Path) -> Iterator[tuple[Target, int]]:
    """genserve over `store_path` with gRPC on; yields where to reach it and its process id."""
    grpc_port = free_port()
    env = service_env(
        store_path,
        clean=True,
        default_model=model,
        grpc_port=grpc_port,
        log_level="warning",
        max_queue_images=8192,
    )
    latent_dim = store.read_metadata(
        store.version_dir(store_path, model, store.latest_version(store_path, model) or 0)
    ).latent_dim
    with running_service(env, folder / "genserve.log", cwd=ROOT) as (process, base_url):
        yield Target(base_url, f"127.0.0.1:{grpc_port}", model, latent_dim), process.pid


def run(
    store_path: Path, model: str, rounds: int, duration_s: float, protocols: Sequence[str]
) -> dict[tuple[str, int, int], list[Measurement]]:
    results: dict[tuple[str, int, int], list[Measurement]] = {}
    with tempfile.TemporaryDirectory() as folder, serving(store_path, model, Path(folder)) as (target, pid):
        for round_index in range(rounds):
            for n, concurrency in CELLS:
                shift = round_index % len(protocols)
                for protocol in [*protocols[shift:], *protocols[:shift]]:
                    measured = measure(protocol, target, pid, n, concurrency, duration_s)
                    results.setdefault((protocol, n, concurrency), []).append(measured)
                    logger.info(
                        "round %d %s n=%d c=%d: %.0f img/s, p99 %s ms",
                        round_index + 1,
                        protocol,
                        n,
                        concurrency,
                        measured.images_per_s,
                        measured.p99_ms,
                    )
    return results


def _shown(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def summarize(results: dict[tuple[str, int, int], list[Measurement]], protocols: Sequence[str]) -> str:
    """The table (medians over rounds, ratios to `/generate` PNG in the same cell) and gRPC's lead."""
    lines = [
        "| n | c | protocol | images/s | vs /generate PNG | p50 ms | p99 ms | server CPU % | client CPU % |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for n, concurrency in CELLS:
        medians = {}
        for protocol in protocols:
            runs = results.get((protocol, n, concurrency), [])
            if not runs:
                continue
            medians[protocol] = (
                statistics.median(m.images_per_s for m in runs),
                median_of_present([m.p50_ms for m in runs]),
                median_of_present([m.p99_ms for m in runs]),
                median_of_present([m.server_cpu_pct for m in runs]),
                statistics.median(m.client_cpu_pct for m in runs),
            )
        base = medians.get(GENERATE_PNG, (0.0,))[0]
        for protocol, (rate, p50, p99, server, client) in medians.items():
            ratio = f"{rate / base:.2f}×" if base else "–"
            lines.append(
                f"| {n} | {concurrency} | {protocol} | {_shown(rate)} | {ratio} | {_shown(p50, 1)} "
                f"| {_shown(p99, 1)} | {_shown(server)} | {_shown(client)} |"
            )
        if TF_GRPC in medians:
            others = {name: values for name, values in medians.items() if name != TF_GRPC}
            if others:
                best_name, best = max(others.items(), key=lambda item: item[1][0])
                grpc_rate = medians[TF_GRPC][0]
                notes.append(
                    f"n={n}, c={concurrency}: gRPC {grpc_rate:,.0f} images/s = {grpc_rate / best[0]:.2f}× "
                    f"the fastest other protocol ({best_name}, {best[0]:,.0f})"
                )
    return "\n".join([*lines, "", *notes])


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench protocols", description=__doc__)
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument(
        "--protocols", default=",".join(PROTOCOLS), help="comma-separated subset of: " + ", ".join(PROTOCOLS)
    )
    args = parser.parse_args(list(argv))
    protocols = [name.strip() for name in args.protocols.split(",")]
    unknown = [name for name in protocols if name not in PROTOCOLS]
    if unknown:
        parser.error(f"unknown protocol {unknown[0]!r}; choose from {', '.join(PROTOCOLS)}")
    results = run(args.store, args.model, args.rounds, args.duration, protocols)
    print(f"model: {args.model}; medians of {args.rounds} interleaved rounds of {args.duration:g} s\n")
    print(summarize(results, protocols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
