"""Migrations and models agree, on SQLite and PostgreSQL; check_schema tells what to do."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, inspect
from sqlalchemy.exc import IntegrityError

from bridge.errors import StorageUnavailable
from bridge.store import migrate
from bridge.store import models as m
from bridge.store.models import Base
from bridge.store.sql import SqlStore


def schema_diff(store: SqlStore) -> list:
    with store.write_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "compare_server_default": True})
        return compare_metadata(ctx, Base.metadata)


def test_migrations_create_exactly_the_models_schema(store: SqlStore) -> None:
    assert schema_diff(store) == []


def test_every_model_table_exists_after_migrate(store: SqlStore) -> None:
    tables = set(inspect(store.write_engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_check_schema_refuses_an_empty_database_with_advice(empty_store: SqlStore) -> None:
    with pytest.raises(StorageUnavailable) as exc:
        empty_store.check_schema()
    assert "not initialised" in exc.value.public
    assert "dp2bridge init" in exc.value.public
    assert migrate.head() in exc.value.public


def test_check_schema_passes_after_migrate(empty_store: SqlStore) -> None:
    empty_store.migrate()
    empty_store.check_schema()
    assert migrate.current(empty_store.write_engine) == migrate.head()


def test_migrate_is_idempotent(store: SqlStore) -> None:
    store.migrate()
    store.migrate()
    store.check_schema()
    assert schema_diff(store) == []


def test_check_constraints_exist_in_the_database(store: SqlStore) -> None:
    """compare_metadata does not look at CHECK constraints; this does."""
    insp = inspect(store.write_engine)
    for table in Base.metadata.sorted_tables:
        wanted = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        have = {c["name"] for c in insp.get_check_constraints(table.name)}
        assert wanted <= have, table.name


def test_a_mailbox_needs_exactly_one_owner(store: SqlStore) -> None:
    now = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
    with pytest.raises(IntegrityError):
        with store.tx() as s:
            s.add(m.Mailbox(name="INBOX", uidvalidity=1, created_at=now))
