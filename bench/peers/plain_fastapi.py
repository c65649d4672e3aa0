"""The server most users would write: FastAPI, a sync endpoint (so FastAPI's thread pool runs it), one model call
per request, no batching. ``python -m bench.peers.plain_fastapi --store S --model M --port P``."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

from bench.peers import work


def build(signature: object, latent_dim: int) -> FastAPI:
    app = FastAPI()

    @app.post("/generate")
    def generate(n: int = 1, seed: int = 0, format: str = "png") -> Response:
        images = work.generate(signature, work.latents_for(n, seed, latent_dim))
        return Response(work.png_grid(images), media_type="image/png")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    options = work.arguments(__doc__ or "")
    signature, latent_dim = work.load_generator(options.store, options.model)
    work.generate(signature, work.latents_for(1, 0, latent_dim))  # warm up
    uvicorn.run(build(signature, latent_dim), host="127.0.0.1", port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
