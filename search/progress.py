"""How a search shows its progress: a live dashboard on a terminal, timestamped lines in a log.

The driver calls a Reporter: `refresh(snapshot)` about once a second, `event(line)` when
something happens, `close()` at the end. `render(snapshot)` is the dashboard itself, shared
with `search status`, which draws the last stored snapshot of a run from another terminal.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from population.stats import describe_noise
from search.snapshot import MemberView, Snapshot
from trainer.result import Status

_FAILURES = frozenset(status.value for status in Status if status.is_failure())
_TOP_MEMBERS = 5
_RECENT_EVENTS = 6
_SUMMARY_EVERY_S = 60.0


class Reporter(Protocol):
    def refresh(self, snapshot: Snapshot) -> None:
        """Redraw with the latest picture (called about once a second)."""

    def event(self, line: str) -> None:
        """Something happened: an evaluation finished, a decision, a new phase."""

    def close(self) -> None:
        """The search ended (or was interrupted): leave the last picture on screen."""


# ---------------------------------------------------------------- formatting
def format_number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def format_duration(seconds: float | None) -> str:
    """5:00, 1:02:03; "-" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_delta(mean: float | None, ci_low: float | None = None, ci_high: float | None = None,
                 n: int | None = None) -> str:
    """A paired difference to the baseline with its confidence interval: "-0.1230 [-0.1500, -0.0960] n=3"."""
    if mean is None or not math.isfinite(mean):
        return "-"
    text = f"{mean:+.4f}"
    if ci_low is not None and ci_high is not None:
        text += f" [{ci_low:+.4f}, {ci_high:+.4f}]"
    if n is not None:
        text += f" n={n}"
    return text


def _member_delta(member: MemberView) -> str:
    return format_delta(member.delta, member.ci_low, member.ci_high, member.n)


def _failed(snapshot: Snapshot) -> int:
    return sum(count for status, count in snapshot.evaluations.items() if status in _FAILURES)


def _finished(snapshot: Snapshot) -> int:
    return sum(count for status, count in snapshot.evaluations.items() if status != "running")


def _children(snapshot: Snapshot) -> str:
    limit = "" if snapshot.children_limit is None else f"/{snapshot.children_limit}"
    return f"{snapshot.children}{limit}"


# ---------------------------------------------------------------- the dashboard
def render(snapshot: Snapshot) -> RenderableType:
    """The dashboard: header, slots, rungs, best so far, noise, fidelity, recent events, result."""
    parts: list[RenderableType] = [_header(snapshot)]
    if snapshot.slots:
        parts.append(_slots(snapshot))
    if snapshot.rungs:
        parts.append(_rungs(snapshot))
    parts.append(_best(snapshot))
    if snapshot.population:
        parts.append(_population(snapshot))
    parts.append(_measurement(snapshot))
    if snapshot.recent:
        parts.append(Text("recent\n", style="bold") + Text("\n".join(f"  {line}" for line in
                                                                      snapshot.recent[-_RECENT_EVENTS:])))
    if snapshot.result:
        parts.append(_result(snapshot.result))
    return Group(*parts)


def _header(snapshot: Snapshot) -> Text:
    text = Text()
    text.append(snapshot.run, style="bold")
    text.append(f"  phase {snapshot.phase}", style="cyan")
    text.append(f"  elapsed {format_duration(snapshot.elapsed)}, left {format_duration(snapshot.remaining)}")
    text.append(f"  compute {format_duration(snapshot.compute_seconds)}")
    if snapshot.llm_cost_usd > 0:
        text.append(f"  LLM ${snapshot.llm_cost_usd:.2f}")
    text.append(f"\nchildren {_children(snapshot)}  evaluations {_finished(snapshot)} ({_failed(snapshot)} failed)")
    if snapshot.decisions:
        text.append("  " + ", ".join(f"{kind} {count}" for kind, count in sorted(snapshot.decisions.items())))
    return text


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True)
    for column in columns:
        # on a narrow terminal the free-text columns give way; ids, numbers and intervals stay whole
        table.add_column(column, justify="right" if column in _NUMERIC else "left", no_wrap=column not in _FREE_TEXT,
                         overflow="ellipsis", min_width=None if column in _FREE_TEXT else len(column))
    return table


_NUMERIC = {"seed", "seeds", "running", "completed", "promoted", "val_bpb", "time"}
_FREE_TEXT = {"origin", "description"}


def _slots(snapshot: Snapshot) -> Table:
    table = _table("slots", "slot", "variant", "origin", "purpose", "budget", "seed", "progress", "time")
    for s in snapshot.slots:
        done = min(max(s.progress, 0.0), 1.0)
        table.add_row(s.slot, s.variant, s.origin, s.purpose, s.budget, str(s.seed),
                      _bar(done), format_duration(s.seconds))
    return table


def _bar(done: float, width: int = 10) -> Text:
    """Heavy for done, light for to do: readable without colour too (logs, pipes)."""
    filled = round(done * width)
    bar = Text("━" * filled, style="green") + Text("─" * (width - filled), style="bright_black")
    return bar + Text(f" {done:>4.0%}")


def _rungs(snapshot: Snapshot) -> Table:
    table = _table("rungs", "rung", "budget", "seeds", "running", "completed", "promoted")
    for index, r in enumerate(snapshot.rungs):
        table.add_row(str(index), r.budget, str(r.seeds), str(r.running), str(r.completed), str(r.promoted))
    return table


def _best(snapshot: Snapshot) -> Text:
    best = snapshot.best
    if best is None:
        return Text("best  -")
    text = Text("best  ")
    text.append(f"{best.origin} {best.variant}", style="bold")
    text.append(f"  val_bpb {format_number(best.val_bpb)}  delta ")
    text.append(_member_delta(best), style="green" if best.delta is not None and best.delta < 0 else "")
    return text


def _population(snapshot: Snapshot) -> Table:
    table = _table("population", "variant", "origin", "val_bpb", "delta vs baseline", "description")
    for m in snapshot.population[:_TOP_MEMBERS]:
        table.add_row(m.variant, m.origin, format_number(m.val_bpb), _member_delta(m), m.description)
    return table


def _measurement(snapshot: Snapshot) -> Text:
    """How far to trust the numbers: the baseline's seed noise and the low-to-high fidelity rank correlations."""
    noise = snapshot.noise or {}
    text = Text("noise  ")
    text.append(describe_noise(noise) if noise.get("sd") is not None else "-")
    for corr in snapshot.fidelity:
        text.append(f"\nfidelity  {corr.get('low', '-')}->{corr.get('high', '-')}: "
                    f"spearman {format_number(corr.get('spearman'), 2)} "
                    f"kendall {format_number(corr.get('kendall'), 2)} "
                    f"(n={corr.get('n', '-')})")
    return text


def _result(result: dict) -> Text:
    text = Text("result", style="bold")
    if result.get("stack"):
        text.append(f"\n  stack    {result['stack']}")
    if result.get("members"):
        text.append(f"\n  members  {' + '.join(map(str, result['members']))}")
    for key, label in (("val_delta", "val "), ("test_delta", "test")):
        delta = result.get(key)
        if isinstance(delta, dict):
            text.append(f"\n  {label}     " + format_delta(delta.get("mean"), delta.get("ci_low"),
                                                        delta.get("ci_high"), delta.get("n")))
    for key, value in result.items():  # anything else the driver adds, if it is a plain value
        if key not in ("stack", "members", "val_delta", "test_delta") and isinstance(value, (str, int, float)):
            text.append(f"\n  {key}  {format_number(value) if isinstance(value, float) else value}")
    return text


def summary(snapshot: Snapshot) -> str:
    """One line for logs: "search: search, 14/40 children, 37 evaluations (2 failed), best ..., 5:00 left"."""
    best = snapshot.best
    best_text = f"best {_member_delta(best)} {best.origin}" if best else "best -"
    left = f", {format_duration(snapshot.remaining)} left" if snapshot.remaining is not None else ""
    return (f"search: {snapshot.phase}, {_children(snapshot)} children, {_finished(snapshot)} evaluations "
            f"({_failed(snapshot)} failed), {best_text}{left}")


# ---------------------------------------------------------------- reporters
class LiveView:
    """The dashboard, redrawn in place on stderr; it stays on screen after close()."""

    def __init__(self, console: Console | None = None) -> None:
        self._live = Live(console=console or Console(stderr=True), transient=False, auto_refresh=False)
        self._live.start()

    def refresh(self, snapshot: Snapshot) -> None:
        self._live.update(render(snapshot), refresh=True)

    def event(self, line: str) -> None:
        """Shown through snapshot.recent on the next refresh; printing it too would scroll the dashboard."""

    def close(self) -> None:
        self._live.stop()


class PlainLog:
    """For logs and pipes: every event on its own timestamped line, a summary line at most once a minute."""

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 summary_every_s: float = _SUMMARY_EVERY_S) -> None:
        self._stream = stream
        self._clock = clock
        self._start = clock()
        self._last_summary = self._start
        self._every = summary_every_s
        self._pending: Snapshot | None = None  # the latest snapshot not yet summarised

    def _print(self, line: str) -> None:
        minutes, seconds = divmod(int(self._clock() - self._start), 60)
        hours, minutes = divmod(minutes, 60)
        print(f"[{hours:02d}:{minutes:02d}:{seconds:02d}] {line}", file=self._stream or sys.stderr, flush=True)

    def refresh(self, snapshot: Snapshot) -> None:
        self._pending = snapshot
        if self._clock() - self._last_summary >= self._every:
            self._summarise()

    def event(self, line: str) -> None:
        self._print(line)

    def close(self) -> None:
        if self._pending is not None:
            self._summarise()

    def _summarise(self) -> None:
        self._print(summary(self._pending))
        self._pending = None
        self._last_summary = self._clock()


class NullReporter:
    """Shows nothing: for the Python API, tests and benchmarks. The events are kept in `lines`."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def refresh(self, snapshot: Snapshot) -> None:
        pass

    def event(self, line: str) -> None:
        self.lines.append(line)

    def close(self) -> None:
        pass


def make_reporter(live: bool | None = None) -> Reporter:
    """The dashboard on a terminal, plain lines otherwise (None: decide by whether stderr is a terminal)."""
    if live is None:
        live = sys.stderr.isatty()
    return LiveView() if live else PlainLog()
