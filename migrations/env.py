"""Alembic environment: the URL comes from the caller (`migrations.upgrade`) or DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, inspect, text

from migrations import LEGACY_VERSION_TABLE, VERSION_TABLE, ours
from shared.infra.db import make_engine
from shared.infra.models import Base
from shared.settings import Settings

config = context.config
url = config.attributes.get("database_url") or Settings.from_env().database_url


def adopt_legacy_version_table(connection: Connection) -> None:
    """A database migrated before our history had its own table holds our revision in
    `alembic_version`: move it to VERSION_TABLE, leaving that name to Optuna."""
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables or LEGACY_VERSION_TABLE not in tables:
        return
    rows = [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
    known = {script.revision for script in context.script.walk_revisions()}
    mine = [rev for rev in rows if rev in known]
    if not mine:
        return  # Optuna's: nothing of ours to carry over
    connection.execute(
        text(
            "CREATE TABLE seqtrain_alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT seqtrain_alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    for rev in mine:
        connection.execute(text("INSERT INTO seqtrain_alembic_version VALUES (:rev)"), {"rev": rev})
    connection.execute(text("DROP TABLE alembic_version"))


def run_migrations_offline() -> None:
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=True,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            with connection.begin():
                adopt_legacy_version_table(connection)
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=True,  # SQLite alters tables by copying them
                compare_type=True,
                version_table=VERSION_TABLE,
                include_name=ours,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
