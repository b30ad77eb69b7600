"""Alembic environment for dp2bridge; run through bridge.store.migrate, not the alembic CLI."""

from alembic import context

from bridge.store.models import Base

config = context.config
connection = config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
with context.begin_transaction():
    context.run_migrations()
