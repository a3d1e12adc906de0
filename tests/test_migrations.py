"""Alembic migrations and the ORM models agree, on SQLite and PostgreSQL. Optuna's study
tables share the database: the comparison leaves them out with the filter env.py uses, and
our revision is read from our own version table."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from migrations import VERSION_TABLE, alembic_config, ours
from shared.infra.db import make_engine
from shared.infra.models import Base


def test_models_match_migrations(database_url):
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert head == "0013"
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            assert {"studies", "trials", "alembic_version"} <= set(inspect(conn).get_table_names())
            context = MigrationContext.configure(
                conn,
                opts={"compare_type": True, "include_name": ours, "version_table": VERSION_TABLE},
            )
            assert compare_metadata(context, Base.metadata) == []
            assert context.get_current_revision() == head
    finally:
        engine.dispose()


def test_the_filter_keeps_our_tables_and_leaves_optunas_out():
    assert ours("jobs", "table", {}) and ours("sweep_trials", "table", {})
    assert not ours("trials", "table", {}) and not ours("alembic_version", "table", {})
    assert ours("ix_jobs_status", "index", {"table_name": "jobs"})


def test_downgrade_and_upgrade_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) == {VERSION_TABLE}
    command.upgrade(config, "head")
    assert {
        "jobs",
        "job_events",
        "metrics",
        "job_samples",
        "checkpoints",
        "sweeps",
        "sweep_trials",
    } <= set(inspect(engine).get_table_names())
    engine.dispose()
