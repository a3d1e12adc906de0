"""Optuna's study storage, in our database beside our tables.

Optuna's RDBStorage keeps every study in its own tables (`studies`, `trials`,
`trial_params`, `trial_values`, `trial_intermediate_values`, the attribute tables,
`version_info`) and versions them with its own Alembic history in `alembic_version`.
Ours is recorded in `seqtrain_alembic_version` (migrations/env.py moves it there from
`alembic_version` in a database migrated before), so the two histories never meet:

- `python -m migrations` / `seqtrain migrate` (scripts/up runs it) upgrades ours, then
  `upgrade_optuna` creates Optuna's tables on a fresh database, or runs Optuna's own
  migrations when the pinned Optuna is newer than the one that made them;
- the controller opens the storage with the check Optuna makes at start, so a schema
  older than the pinned Optuna is an error naming the command that fixes it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

_LOCK = threading.Lock()
_STORAGES: dict[str, RDBStorage] = {}


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def upgrade_optuna(url: str) -> str:
    """Create or upgrade Optuna's tables in the database at `url`; returns Optuna's schema
    revision after it."""
    from optuna.storages import RDBStorage

    _quiet()
    storage = RDBStorage(url, skip_compatibility_check=True, engine_kwargs=_engine_kwargs(url))
    try:
        if storage.get_current_version() != storage.get_head_version():
            with _keep_logging():
                storage.upgrade()
        return storage.get_current_version()
    finally:
        storage.engine.dispose()


@contextlib.contextmanager
def _keep_logging() -> Iterator[None]:
    """Optuna's migration environment applies its own alembic.ini logging (fileConfig,
    which disables every logger made before it) when the root logger has no handler:
    give the root one for the while, so the process keeps its logging."""
    root = logging.getLogger()
    guard = None if root.handlers else logging.NullHandler()
    if guard is not None:
        root.addHandler(guard)
    try:
        yield
    finally:
        if guard is not None:
            root.removeHandler(guard)


def optuna_storage(url: str) -> RDBStorage:
    """One RDBStorage a process and database (its engine pools connections). Optuna's
    tables older than the pinned Optuna: RuntimeError naming `seqtrain migrate`."""
    with _LOCK:
        storage = _STORAGES.get(url)
        if storage is None:
            from optuna.storages import RDBStorage

            _quiet()
            kwargs = _engine_kwargs(url)
            try:
                storage = RDBStorage(url, engine_kwargs=kwargs)
            except RuntimeError as exc:
                raise RuntimeError(
                    f"Optuna's tables need upgrading: run `seqtrain migrate` ({exc})"
                ) from exc
            _STORAGES[url] = storage
        return storage


def forget_storages() -> None:
    """Drop the cached storages (after a fork, or in tests between databases)."""
    with _LOCK:
        for storage in _STORAGES.values():
            storage.engine.dispose()
        _STORAGES.clear()


def _engine_kwargs(url: str) -> dict[str, object]:
    if url.startswith("sqlite"):
        # Our writers and Optuna's share the file: wait for each other's short transactions.
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True}
