"""What `incitescan serve` and `incitescan keys create` do: run the API with uvicorn (the
database is migrated at start-up), and create an API key directly in the configured database
(the way to get the first admin key)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .auth import create_key
from .db import make_engine, migrate, session_factory
from .settings import ServiceSettings

if TYPE_CHECKING:
    import uvicorn


def server_config(app: Any, settings: ServiceSettings, host: str = "127.0.0.1",
                  port: int = 8000, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of `app`: header and body timeouts and the per-client
    connection cap (`service.connections`), uvicorn's keep-alive timeout and connection cap."""
    import uvicorn

    from .connections import guarded_protocol

    protocol = guarded_protocol(header_timeout=settings.header_timeout_s,
                                body_idle_timeout=settings.body_idle_timeout_s,
                                max_per_client=settings.max_connections_per_client)
    values: dict[str, Any] = {
        "host": host, "port": port, "log_level": "info", "proxy_headers": False,
        "http": protocol, "timeout_keep_alive": settings.keep_alive_s,
        "limit_concurrency": settings.max_connections, **overrides}
    return uvicorn.Config(app, **values)


def serve(host: str = "127.0.0.1", port: int = 8000, settings: ServiceSettings | None = None
          ) -> None:
    """Run the API on `host`:`port` until interrupted."""
    import uvicorn

    from .api import create_app

    settings = settings or ServiceSettings()
    uvicorn.Server(server_config(create_app(settings), settings, host, port)).run()


def new_key(role: str, name: str = "", settings: ServiceSettings | None = None
            ) -> tuple[str, str]:
    """Create an API key with `role` in the configured database; returns (key id, key text)."""
    engine = make_engine((settings or ServiceSettings()).database_url)
    try:
        migrate(engine)
        with session_factory(engine).begin() as session:
            row, key = create_key(session, role, name, actor="cli")
            return row.id, key
    finally:
        engine.dispose()
