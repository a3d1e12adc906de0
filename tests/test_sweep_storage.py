"""Optuna's study tables beside ours, on SQLite and PostgreSQL: `migrations.upgrade` makes
both at head from an empty database, adopts a database whose revision of ours is still in
`alembic_version`, and upgrades Optuna's tables made by an older Optuna."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import Engine, inspect, text

from migrations import LEGACY_VERSION_TABLE, VERSION_TABLE, alembic_config, ours, upgrade
from shared.infra.db import make_engine
from shared.infra.models import Base
from shared.sweeps.storage import forget_storages, optuna_storage, upgrade_optuna
from tests.conftest import BACKENDS, _postgres_database

OUR_HEAD = "0013"


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all, on each backend."""
    try:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'empty.db'}"
        else:
            yield from _postgres_database("storage")
    finally:
        forget_storages()


def versions(engine: Engine, table: str) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text(f"SELECT version_num FROM {table}"))]


def optuna_versions(url: str) -> tuple[str, str]:
    storage = RDBStorage(url, skip_compatibility_check=True)
    try:
        return storage.get_current_version(), storage.get_head_version()
    finally:
        storage.engine.dispose()


def snapshot(engine: Engine) -> dict[str, object]:
    """Every table's columns and indexes, and both version tables' rows."""
    found = inspect(engine)
    shape = {
        name: (
            sorted(c["name"] for c in found.get_columns(name)),
            sorted(str(i["name"]) for i in found.get_indexes(name)),
        )
        for name in found.get_table_names()
    }
    return {
        "tables": shape,
        "ours": versions(engine, VERSION_TABLE),
        "optuna": versions(engine, LEGACY_VERSION_TABLE),
    }


def assert_ours_match_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        opts = {"compare_type": True, "include_name": ours, "version_table": VERSION_TABLE}
        context = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(context, Base.metadata) == []
        assert context.get_current_revision() == OUR_HEAD


def run_a_study(url: str, name: str) -> None:
    study = optuna.create_study(storage=optuna_storage(url), study_name=name, direction="maximize")
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    trial.report(0.5, 1)
    trial.report(0.7, 2)
    study.tell(trial, 0.7)
    loaded = optuna.load_study(study_name=name, storage=optuna_storage(url))
    (done,) = loaded.get_trials()
    assert done.state == TrialState.COMPLETE and done.value == 0.7
    assert done.intermediate_values == {1: 0.5, 2: 0.7}
    assert 1e-4 <= done.params["lr"] <= 1e-2


def test_upgrade_makes_both_at_head_and_again_changes_nothing(empty_url):
    upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        current, head = optuna_versions(empty_url)
        assert current == head
        assert versions(engine, VERSION_TABLE) == [OUR_HEAD]
        assert versions(engine, LEGACY_VERSION_TABLE) == [head]
        assert_ours_match_the_models(engine)
        tables = set(inspect(engine).get_table_names())
        assert {"studies", "trials", "trial_values", "version_info"} <= tables
        assert {"jobs", "sweeps", "sweep_trials"} <= tables
        run_a_study(empty_url, f"study-{uuid.uuid4().hex[:6]}")
        before = snapshot(engine)
        upgrade(empty_url)
        assert snapshot(engine) == before
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM trials")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_database_migrated_before_moves_our_revision_then_gets_optunas(empty_url):
    command.upgrade(alembic_config(empty_url), "0010")
    engine = make_engine(empty_url)
    try:
        # As our history was recorded before: in Alembic's default table, under its name.
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
            conn.execute(
                text(
                    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
                )
            )
            conn.execute(text("INSERT INTO alembic_version VALUES ('0010')"))
        tables = set(inspect(engine).get_table_names())
        assert "sweeps" not in tables and "studies" not in tables
        upgrade(empty_url)
        assert versions(engine, VERSION_TABLE) == [OUR_HEAD]
        current, head = optuna_versions(empty_url)
        assert versions(engine, LEGACY_VERSION_TABLE) == [head] and current == head
        assert_ours_match_the_models(engine)
        run_a_study(empty_url, "after-the-move")
    finally:
        engine.dispose()


def test_optunas_tables_from_an_older_optuna_are_upgraded(empty_url):
    upgrade(empty_url)
    all_versions = RDBStorage(empty_url, skip_compatibility_check=True)
    head, previous = all_versions._version_manager.get_all_versions()[:2]
    all_versions.engine.dispose()
    assert (head, previous) == ("v3.2.0.a", "v3.0.0.d")
    engine = make_engine(empty_url)
    try:
        # The tables as the Optuna of `previous` made them: v3.2.0.a only adds the index on
        # trials.study_id (the models name it ix_trials_study_id; the migration does not).
        (index,) = [
            i for i in inspect(engine).get_indexes("trials") if i["column_names"] == ["study_id"]
        ]
        with engine.begin() as conn:
            conn.execute(text(f"DROP INDEX {index['name']}"))
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": previous})
        with pytest.raises(RuntimeError, match="seqtrain migrate"):
            optuna_storage(empty_url)
        forget_storages()
        upgrade(empty_url)
        assert optuna_versions(empty_url) == (head, head)
        indexed = [i["column_names"] for i in inspect(engine).get_indexes("trials")]
        assert ["study_id"] in indexed
        assert versions(engine, VERSION_TABLE) == [OUR_HEAD]
        run_a_study(empty_url, "after-the-upgrade")
    finally:
        engine.dispose()


def test_optunas_migrations_leave_the_process_logging_alone(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_trials_study_id"))
        conn.execute(text("UPDATE alembic_version SET version_num = 'v3.0.0.d'"))
    engine.dispose()
    ours_logger = logging.getLogger("worker.sweeper")
    root = logging.getLogger()
    # A process that never configured logging (the migrate command, `seqtrain up`).
    monkeypatch.setattr(root, "handlers", [])
    assert upgrade_optuna(url) == "v3.2.0.a"
    assert root.handlers == [] and not ours_logger.disabled
