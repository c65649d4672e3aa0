"""`python -m app`: serve the model store with uvicorn on GENSERVE_HOST:GENSERVE_PORT."""

from __future__ import annotations

import uvicorn

from app.config import Settings
from app.main import create_app
from app.server.connections import DeadlineHttpToolsProtocol, connection_budget, raise_descriptor_limit
from app.server.logs import configure_logging
from app.server.shutdown import GracefulServer
from genserve.console import quiet_tensorflow


def main() -> None:
    settings = Settings()
    if settings.log_level != "debug":
        quiet_tensorflow(modules=("tensorflow",))
    configure_logging(settings.log_level, settings.log_format)
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
        # The service writes one access line per request itself (app.server.logs), and uvicorn's own lines go
        # through the same handler, so every line has one format.
        access_log=False,
        log_config=None,
    )
    GracefulServer(config, app, settings.shutdown_grace_s).run()


if __name__ == "__main__":
    main()
