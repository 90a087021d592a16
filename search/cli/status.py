"""`search status`: the dashboard of a search, live or finished, from its store."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from datetime import datetime
from pathlib import Path

import click
from rich.console import RenderableType

from search.cli._output import FORMAT_OPTION
from search.lock import LOCK_FILE
from search.snapshot import Snapshot
from trainer.errors import UserError

RUNS = Path("runs")            # where `search evolve` puts run directories by default
_HEARTBEAT_FRESH_S = 30.0      # without a lock file to test, a younger heartbeat means live
_WATCH_EVERY_S = 2.0


@click.command()
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--storage", default=None, help="SQLAlchemy URL of the run's store, for a store outside the run "
              "directory (e.g. postgresql://...).")
@click.option("--watch", is_flag=True, help="Redraw every 2 s until Ctrl-C.")
@FORMAT_OPTION
def status(run_dir: Path | None, storage: str | None, watch: bool, output_format: str) -> None:
    """Show the progress of the search in RUN_DIR (default: the newest folder under ./runs)."""
    from rich.console import Console

    if watch and output_format == "json":
        raise UserError("--watch redraws the dashboard; drop --format json for a single JSON document")
    if run_dir is None and storage is None:
        run_dir = newest_run(RUNS)
    url, name = _store_url(run_dir, storage)
    if output_format == "json":
        live, heartbeat, snapshot = _read(url, name, run_dir)
        click.echo(json.dumps({"live": live, "state": _state(live, snapshot), "heartbeat": heartbeat,
                               "snapshot": snapshot.to_dict()}, indent=2, default=str))
        return
    console = Console()
    if not watch:
        console.print(_view(*_read(url, name, run_dir)))
        return
    from rich.live import Live

    with Live(_view(*_read(url, name, run_dir)), console=console, auto_refresh=False) as view:
        try:
            while True:
                time.sleep(_WATCH_EVERY_S)
                view.update(_view(*_read(url, name, run_dir)), refresh=True)
        except KeyboardInterrupt:
            pass


def newest_run(runs: Path) -> Path:
    """The run directory written to last: the newest of each folder's own and its database's times."""
    from population.store import DATABASE

    def modified(folder: Path) -> float:
        files = [folder, folder / DATABASE, folder / f"{DATABASE}-wal"]
        return max(f.stat().st_mtime for f in files if f.exists())

    folders = [f for f in runs.iterdir() if f.is_dir()] if runs.is_dir() else []
    if not folders:
        raise UserError(f"no run found under ./{runs}: pass the run directory, e.g. search status {runs}/my-run")
    return max(folders, key=modified)


def is_locked(lock_file: Path) -> bool:
    """Whether another open file holds an flock on lock_file (the driver of a live search does)."""
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


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


def _read(url: str, name: str, run_dir: Path | None) -> tuple[bool, float | None, Snapshot]:
    """(live, heartbeat, snapshot) of the run, as stored."""
    import sqlalchemy as sa

    from population.store import Store

    try:
        store = Store(url)
        try:
            meta = store.meta()
        finally:
            store.close()
    except sa.exc.SQLAlchemyError as error:
        raise UserError(f"cannot read the store of {name}: {str(error).splitlines()[0]}") from None
    heartbeat = meta.get("heartbeat")
    if run_dir is not None:
        live = is_locked(run_dir / LOCK_FILE)  # the driver holds it for as long as it runs
    else:
        live = heartbeat is not None and time.time() - heartbeat < _HEARTBEAT_FRESH_S
    if "snapshot" not in meta:
        if live:
            raise UserError(f"{name} has not recorded progress yet: it is still measuring the baseline; "
                            "try again in a minute")
        raise UserError(f"{name} has no recorded progress: its search stopped (or has not started) before the "
                        "first snapshot")
    try:
        snapshot = Snapshot.from_dict(meta["snapshot"])
    except (TypeError, KeyError) as error:
        raise UserError(f"{name}: its progress snapshot does not match this evotrain version ({error}); "
                        "read it with the version that wrote it") from None
    return live, heartbeat, snapshot


def _state(live: bool, snapshot: Snapshot) -> str:
    if live:
        return "live"
    return "finished" if snapshot.phase == "done" else "not running"


def _view(live: bool, heartbeat: float | None, snapshot: Snapshot) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    from search.progress import render

    updated = max(heartbeat or 0.0, snapshot.updated or 0.0)
    state = _state(live, snapshot)
    if state == "live":
        line = f"live (updated {time.time() - updated:.0f} s ago)" if updated else "live"
    elif state == "finished":
        line = "finished"
    else:
        when = datetime.fromtimestamp(updated).strftime("%Y-%m-%d %H:%M") if updated else "unknown"
        line = f"not running (last update {when})"
    return Group(Text(line, style="bold green" if live else "bold"), render(snapshot))
