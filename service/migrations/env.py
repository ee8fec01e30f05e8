"""Alembic environment: migrations run on the connection `service.db.migrate` passes in (or
on INCITESCAN_DATABASE_URL when the `alembic` command is used directly)."""

from __future__ import annotations

from alembic import context

from service.db import make_engine
from service.models import Base
from service.settings import ServiceSettings

target_metadata = Base.metadata


def run_migrations() -> None:
    """Run the migrations online, on the given connection or a fresh one."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(ServiceSettings().database_url)
    with engine.begin() as own:
        context.configure(connection=own, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
