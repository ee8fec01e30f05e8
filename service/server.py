"""What `incitescan serve` and `incitescan keys create` do: run the API with uvicorn (the
database is migrated at start-up), and create an API key directly in the configured database
(the way to get the first admin key)."""

from __future__ import annotations

from .auth import create_key
from .db import make_engine, migrate, session_factory
from .settings import ServiceSettings


def serve(host: str = "127.0.0.1", port: int = 8000, settings: ServiceSettings | None = None
          ) -> None:
    """Run the API on `host`:`port` until interrupted."""
    import uvicorn

    from .api import create_app

    uvicorn.run(create_app(settings or ServiceSettings()), host=host, port=port,
                log_level="info", proxy_headers=False)


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
