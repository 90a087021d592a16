"""Finding a run for the commands that read one: RUN_DIR (default: the newest folder under ./runs) or --storage URL."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from trainer.errors import UserError

if TYPE_CHECKING:
    from population.store import Store

RUNS = Path("runs")  # where `search evolve` puts run directories by default

RUN_DIR_ARGUMENT = click.argument("run_dir", required=False, type=click.Path(path_type=Path))
STORAGE_OPTION = click.option(
    "--storage", default=None, help="SQLAlchemy URL of the run's store, for a store outside the run "
    "directory (e.g. postgresql://...).")


@dataclass(frozen=True)
class RunRef:
    url: str               # the store's SQLAlchemy URL
    name: str              # how messages name the run
    run_dir: Path | None   # None when only a --storage URL was given


def find_run(run_dir: Path | None, storage: str | None, command: str) -> RunRef:
    """The run a command reads; refuses a folder or a database that is not a run's, in one line."""
    if run_dir is None and storage is None:
        run_dir = newest_run(RUNS, command)
    url, name = _store_url(run_dir, storage)
    return RunRef(url, name, run_dir)


@contextmanager
def reading(run: RunRef) -> Iterator[Store]:
    """The run's store, open for the block; a database that cannot be read is a one-line error."""
    import sqlalchemy as sa

    from population.store import Store

    store = None
    try:
        store = Store(run.url)
        yield store
    except sa.exc.SQLAlchemyError as error:
        raise UserError(f"cannot read the store of {run.name}: {str(error).splitlines()[0]} (was it written by "
                        "another evotrain version? read it with that one)") from None
    finally:
        if store is not None:
            store.close()


def newest_run(runs: Path, command: str) -> Path:
    """The run directory written to last: the newest of each folder's own and its database's times."""
    from population.store import DATABASE

    def modified(folder: Path) -> float:
        files = [folder, folder / DATABASE, folder / f"{DATABASE}-wal"]
        return max(f.stat().st_mtime for f in files if f.exists())

    folders = [f for f in runs.iterdir() if f.is_dir()] if runs.is_dir() else []
    if not folders:
        raise UserError(f"no run found under ./{runs}: pass the run directory, e.g. search {command} {runs}/my-run")
    return max(folders, key=modified)


def _store_url(run_dir: Path | None, storage: str | None) -> tuple[str, str]:
    """The store's URL, and how to name the run in messages; refuses a folder or a file that is not a run's."""
    from population.store import DATABASE

    if storage is not None:
        _check_storage(storage)
        return storage, str(run_dir or storage)
    if not run_dir.is_dir():
        raise UserError(f"no such run directory: {run_dir}; pass a folder made by search evolve (e.g. {RUNS}/my-run)")
    database = run_dir / DATABASE
    if not database.is_file():
        raise UserError(f"{run_dir} has no {DATABASE}: is it a run directory? (or pass --storage URL)")
    return f"sqlite:///{database.resolve()}", str(run_dir)


def _check_storage(url: str) -> None:
    """A mistyped SQLite path would otherwise become a new, empty database."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise UserError(f"--storage {url!r} is not a database URL; expected e.g. sqlite:///runs/x/evotrain.db "
                        "or postgresql://user@host/db") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).is_file():
        raise UserError(f"--storage {url}: no such database file {parsed.database}")
