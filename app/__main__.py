"""`python -m app`: serve the model store with uvicorn on GENSERVE_HOST:GENSERVE_PORT."""

from __future__ import annotations

import logging

import uvicorn

from app.config import Settings
from app.main import create_app


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One process, one worker: the batcher lives in this process, so scale out with replicas.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
