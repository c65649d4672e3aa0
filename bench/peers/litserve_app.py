"""LitServe with its own batching (up to 64 requests, 5 ms), as its documentation shows: requests are decoded,
batched into one model call, split and encoded. ``python -m bench.peers.litserve_app --store S --model M --port P``.
LitServe reads a JSON body; a small middleware moves this benchmark's query fields into one."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import litserve as ls
import numpy as np
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.peers import work

_MAX_BATCH = 64
_BATCH_TIMEOUT_S = 0.005


class QueryToBody:
    """``POST /generate?n=..&seed=..`` with an empty body becomes ``{"n": .., "seed": ..}``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/generate":
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode())
        body = json.dumps(
            {key: int(values[0]) for key, values in query.items() if key in ("n", "seed")}
        ).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        sent = False

        async def with_body() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                while (await receive()).get("more_body", False):
                    pass
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": headers}, with_body, send)


class GeneratorAPI(ls.LitAPI):
    def __init__(self, store: Any, model: str) -> None:
        super().__init__()
        self._store, self._model = store, model

    def setup(self, device: str) -> None:
        self.signature, self.latent_dim = work.load_generator(self._store, self._model)
        work.generate(self.signature, work.latents_for(1, 0, self.latent_dim))

    def decode_request(self, request: dict[str, int]) -> np.ndarray:
        return work.latents_for(int(request.get("n", 1)), int(request.get("seed", 0)), self.latent_dim)

    def batch(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        return np.concatenate(inputs), [len(rows) for rows in inputs]

    def predict(self, batch: tuple[np.ndarray, list[int]]) -> tuple[np.ndarray, list[int]]:
        latents, sizes = batch
        return work.generate(self.signature, latents), sizes

    def unbatch(self, output: tuple[np.ndarray, list[int]]) -> list[np.ndarray]:
        images, sizes = output
        return np.split(images, np.cumsum(sizes)[:-1])

    def encode_response(self, images: np.ndarray) -> Response:
        return Response(work.png_grid(images), media_type="image/png")


def main() -> None:
    options = work.arguments(__doc__ or "")
    server = ls.LitServer(
        GeneratorAPI(options.store, options.model),
        accelerator="cpu",
        max_batch_size=_MAX_BATCH,
        batch_timeout=_BATCH_TIMEOUT_S,
        api_path="/generate",
        middlewares=[QueryToBody],
    )
    server.run(port=options.port, host="127.0.0.1", log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
