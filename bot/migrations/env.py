"""Alembic environment. Run through `bot.store.Store.upgrade()` (`flywheel db upgrade`),
which hands us a live connection in ``config.attributes["connection"]``."""

from alembic import context

from bot.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("Run migrations with `flywheel db upgrade`, not the alembic command.")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("Offline (SQL script) migrations are not supported; use `flywheel db upgrade`.")
run_migrations_online()
