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
from search.cli._runs import RUN_DIR_ARGUMENT, STORAGE_OPTION, RunRef, find_run, reading
from search.lock import LOCK_FILE
from search.snapshot import Snapshot
from trainer.errors import UserError

_HEARTBEAT_FRESH_S = 30.0      # without a lock file to test, a younger heartbeat means live
_WATCH_EVERY_S = 2.0


@click.command()
@RUN_DIR_ARGUMENT
@STORAGE_OPTION
@click.option("--watch", is_flag=True, help="Redraw every 2 s until Ctrl-C.")
@FORMAT_OPTION
def status(run_dir: Path | None, storage: str | None, watch: bool, output_format: str) -> None:
    """Show the progress of the search in RUN_DIR (default: the newest folder under ./runs)."""
    from rich.console import Console

    if watch and output_format == "json":
        raise UserError("--watch redraws the dashboard; drop --format json for a single JSON document")
    run = find_run(run_dir, storage, "status")
    if output_format == "json":
        live, heartbeat, snapshot = _read(run)
        click.echo(json.dumps({"live": live, "state": _state(live, snapshot), "heartbeat": heartbeat,
                               "snapshot": snapshot.to_dict()}, indent=2, default=str))
        return
    console = Console()
    if not watch:
        console.print(_view(*_read(run)))
        return
    from rich.live import Live

    with Live(_view(*_read(run)), console=console, auto_refresh=False) as view:
        try:
            while True:
                time.sleep(_WATCH_EVERY_S)
                view.update(_view(*_read(run)), refresh=True)
        except KeyboardInterrupt:
            pass


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


def _read(run: RunRef) -> tuple[bool, float | None, Snapshot]:
    """(live, heartbeat, snapshot) of the run, as stored."""
    with reading(run) as store:
        meta = store.meta()
    name = run.name
    heartbeat = meta.get("heartbeat")
    if run.run_dir is not None:
        live = is_locked(run.run_dir / LOCK_FILE)  # the driver holds it for as long as it runs
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
