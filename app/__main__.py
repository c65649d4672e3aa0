"""`python -m app`: serve the model store with uvicorn on GENSERVE_HOST:GENSERVE_PORT."""

from __future__ import annotations

import logging

import uvicorn

from app.config import Settings
from app.main import create_app
from app.server.connections import DeadlineHttpToolsProtocol, connection_budget, raise_descriptor_limit
from app.server.shutdown import GracefulServer
from genserve.console import quiet_tensorflow


def main() -> None:
    settings = Settings()
    if settings.log_level != "debug":
        quiet_tensorflow(modules=("tensorflow",))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    raise_descriptor_limit()
    app = create_app(settings)
    listeners = 1 if settings.grpc_port is None else 2
    budget = connection_budget(settings.max_connections, listeners)
    http = DeadlineHttpToolsProtocol.configured(
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        write_timeout_s=settings.write_timeout_s,
        max_connections=budget,
        max_per_client=settings.max_connections_per_client or max(1, budget // 2),
        on_refused=app.state.metrics.connections_refused.inc,
    )
    # One process, one worker: the batcher lives in this process, so scale out with replicas.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        workers=1,
        http=http,
        timeout_keep_alive=settings.keep_alive_s,
    )
    GracefulServer(config, app, settings.shutdown_grace_s).run()


if __name__ == "__main__":
    main()
