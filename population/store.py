"""The run store: variants, evaluations and run metadata in one SQL database.

SQLite in the run directory by default (any SQLAlchemy URL works, PostgreSQL included).
Tables carry an `evotrain_` prefix so Optuna's own tables (`studies`, `trials`, ...) can
live in the same file and `optuna-dashboard <url>` shows the studies beside them. Every
write is its own transaction, committed at once: a search killed at any moment loses no
finished evaluation. Evaluations still marked running when a search starts again were
interrupted; `requeue_interrupted` removes them so they are run again.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import sqlalchemy as sa

from trainer.result import EvalResult

DATABASE = "evotrain.db"
RUNNING = "running"

_metadata = sa.MetaData()
_meta = sa.Table(
    "evotrain_meta", _metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),  # JSON
)
_variants = sa.Table(
    "evotrain_variants", _metadata,
    sa.Column("id", sa.String(16), primary_key=True),  # hash of source and knob values
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("knobs", sa.Text, nullable=False),       # JSON object, name -> value
    sa.Column("parents", sa.Text, nullable=False),     # JSON list of variant ids
    sa.Column("mutation", sa.Text),                    # JSON (mutations.edits.Mutation.to_dict), None for the baseline
    sa.Column("origin", sa.String(200), nullable=False),  # baseline, catalog:NAME, llm:MODEL, merge, tune, stack
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("atoms", sa.Text),                       # JSON list of atom names for a baseline-plus-atoms stack
)
_evaluations = sa.Table(
    "evotrain_evaluations", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("variant_id", sa.String(16), sa.ForeignKey("evotrain_variants.id"), nullable=False),
    sa.Column("budget", sa.String(40), nullable=False),  # as written: "300k", "60s"
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("split", sa.String(8), nullable=False),
    sa.Column("purpose", sa.String(40), nullable=False, default=""),  # why it ran: rung 1, noise, recheck, stack, test, ...
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("val_bpb", sa.Float),
    sa.Column("result", sa.Text),                        # JSON (EvalResult.to_dict)
    sa.Column("log_path", sa.Text),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("finished", sa.Float),
    sa.UniqueConstraint("variant_id", "budget", "seed", "split", name="evotrain_one_evaluation_per_fidelity"),
)
_decisions = sa.Table(
    "evotrain_decisions", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("variant_id", sa.String(16), sa.ForeignKey("evotrain_variants.id"), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),      # see DECISIONS
    sa.Column("rung", sa.Integer),                          # the rung it was taken at, when it is a rung's judgement
    sa.Column("reference", sa.String(16)),                  # the variant it was compared with
    sa.Column("detail", sa.Text, nullable=False),           # JSON: the paired comparison, a reason, ...
    sa.Column("time", sa.Float, nullable=False),
)
_atoms = sa.Table(
    "evotrain_atoms", _metadata,
    sa.Column("name", sa.String(200), primary_key=True),  # catalog:rope, llm:MODEL#1a2b3c4d, knob:LEARNING_RATE*3
    sa.Column("mutation", sa.Text, nullable=False),    # JSON Mutation relative to the baseline
    sa.Column("origin", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("prior", sa.Text),                       # JSON {"mean", "sd", "source"}: what the proposer expected
    sa.Column("requires", sa.Text, nullable=False),    # JSON list of atom names it cannot go without
    sa.Column("group", sa.String(200), nullable=False),  # atoms of one group exclude each other (a knob's levels)
    sa.Column("bundled", sa.Boolean, nullable=False),  # its mutation carries the changes of the atoms it requires
    sa.Column("created", sa.Float, nullable=False),
)
_trials = sa.Table(
    "evotrain_knob_trials", _metadata,
    sa.Column("variant_id", sa.String(16), sa.ForeignKey("evotrain_variants.id"), primary_key=True),
    sa.Column("study", sa.String(100), nullable=False),    # the Optuna study (in the same database)
    sa.Column("trial_id", sa.Integer, nullable=False),
)


class DecisionKind(str, Enum):
    """What the search concluded about a variant."""

    ACCEPTED = "accepted"      # beat its reference: joins the population (greedy: kept)
    REJECTED = "rejected"      # did not (greedy: discarded)
    FAILED = "failed"          # its run crashed, timed out, leaked, ...
    REFUSED = "refused"        # static validation or its smoke run refused it
    PRUNED = "pruned"          # stopped early, or still waiting when the search ended
    PROMOTED = "promoted"      # climbed to the next rung
    CONFIRMED = "confirmed"    # an elite re-checked on fresh seeds kept its gain
    RETIRED = "retired"        # ... or lost it: out as a lucky winner
    DROPPED = "dropped"        # out of a full population, worse than the members kept
    INCUMBENT = "incumbent"    # became the best answer so far (with the compute spent to get there)

    def ends_climb(self) -> bool:
        """Ends a candidate's climb through the rungs."""
        return self in (DecisionKind.ACCEPTED, DecisionKind.REJECTED, DecisionKind.FAILED, DecisionKind.REFUSED,
                        DecisionKind.PRUNED)


DECISIONS = tuple(kind.value for kind in DecisionKind)


def variant_id(source: str, knobs: dict) -> str:
    """Identity of a variant: the same source with the same knob values is the same variant."""
    text = source + "\0" + json.dumps(knobs, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Variant:
    id: str
    source: str
    knobs: dict
    parents: tuple[str, ...]
    mutation: dict | None
    origin: str
    created: float
    atoms: tuple[str, ...] | None = None   # a stack of atoms on the baseline; None for other variants


@dataclass(frozen=True)
class StoredAtom:
    name: str
    mutation: dict
    origin: str
    description: str
    prior: dict | None
    requires: tuple[str, ...]
    group: str
    bundled: bool
    created: float


@dataclass(frozen=True)
class Decision:
    id: int
    variant_id: str
    kind: str
    rung: int | None
    reference: str | None
    detail: dict
    time: float


@dataclass(frozen=True)
class Evaluation:
    id: int
    variant_id: str
    budget: str
    seed: int
    split: str
    purpose: str
    status: str
    val_bpb: float | None
    result: EvalResult | None
    log_path: str | None
    started: float
    finished: float | None


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = sa.create_engine(url)
        if self._engine.dialect.name == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        self._create_tables()

    @classmethod
    def in_run_dir(cls, run_dir: str | Path) -> Store:
        """The default store: an SQLite file in the run directory (made if missing)."""
        folder = Path(run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{folder.resolve() / DATABASE}")

    def _create_tables(self) -> None:
        """Create what is missing. Two processes opening a new store at once (a search and `search status`)
        can both find a table missing and both create it: the loser retries and finds it there. Every lost
        race means another process created something, so a few openers at once need a few retries each
        (3 were not enough for 4 openers on a loaded machine). Switching a new file to WAL can find it locked
        by another opener without waiting (SQLite's deadlock avoidance): a lost race too."""
        attempts = 4 * len(_metadata.tables)
        for attempt in range(attempts):
            try:
                _metadata.create_all(self._engine)
                self._add_missing_columns()
                return
            except sa.exc.OperationalError as error:
                lost_race = any(sign in str(error) for sign in ("already exists", "duplicate column",
                                                                "database is locked"))  # switching it to WAL
                if not lost_race or attempt == attempts - 1:
                    raise

    def _add_missing_columns(self) -> None:
        """Stores written before a column existed get it, with its default, so older runs stay readable."""
        for table, column, definition in ((_evaluations, "purpose", "VARCHAR(40) NOT NULL DEFAULT ''"),
                                          (_variants, "atoms", "TEXT")):
            present = {c["name"] for c in sa.inspect(self._engine).get_columns(table.name)}
            if column not in present:
                with self._engine.begin() as db:
                    db.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column} {definition}"))

    # ---------------------------------------------------------------- run metadata
    def set_meta(self, key: str, value: object) -> None:
        with self._engine.begin() as db:
            db.execute(sa.delete(_meta).where(_meta.c.key == key))
            db.execute(sa.insert(_meta).values(key=key, value=json.dumps(value)))

    def meta(self) -> dict:
        with self._engine.connect() as db:
            return {row.key: json.loads(row.value) for row in db.execute(sa.select(_meta))}

    # ---------------------------------------------------------------- variants
    def add_variant(self, source: str, *, knobs: dict | None = None, parents: tuple[str, ...] = (),
                    mutation: dict | None = None, origin: str,
                    atoms: tuple[str, ...] | None = None) -> tuple[Variant, bool]:
        """The stored variant and whether it is new; a duplicate (same source and knobs) is not stored twice."""
        knobs = knobs or {}
        key = variant_id(source, knobs)
        existing = self.variant(key)
        if existing is not None:
            return existing, False
        row = dict(id=key, source=source, knobs=json.dumps(knobs, sort_keys=True), parents=json.dumps(list(parents)),
                   mutation=None if mutation is None else json.dumps(mutation), origin=origin, created=time.time(),
                   atoms=None if atoms is None else json.dumps(sorted(atoms)))
        with self._engine.begin() as db:
            db.execute(sa.insert(_variants).values(**row))
        return self.variant(key), True

    def variant(self, key: str) -> Variant | None:
        with self._engine.connect() as db:
            row = db.execute(sa.select(_variants).where(_variants.c.id == key)).first()
        return None if row is None else _variant(row)

    def variants(self) -> list[Variant]:
        with self._engine.connect() as db:
            return [_variant(row) for row in db.execute(sa.select(_variants).order_by(_variants.c.created))]

    # ---------------------------------------------------------------- atoms
    def add_atom(self, name: str, mutation: dict, *, origin: str, description: str = "", prior: dict | None = None,
                 requires: tuple[str, ...] = (), group: str = "", bundled: bool = False) -> bool:
        """Store an atom once; False when one of that name exists already."""
        with self._engine.begin() as db:
            try:
                db.execute(sa.insert(_atoms).values(
                    name=name, mutation=json.dumps(mutation), origin=origin, description=description,
                    prior=None if prior is None else json.dumps(prior), requires=json.dumps(list(requires)),
                    group=group, bundled=bundled, created=time.time()))
            except sa.exc.IntegrityError:
                return False
        return True

    def atoms(self) -> list[StoredAtom]:
        with self._engine.connect() as db:
            return [StoredAtom(r.name, json.loads(r.mutation), r.origin, r.description,
                               None if r.prior is None else json.loads(r.prior), tuple(json.loads(r.requires)),
                               r.group, bool(r.bundled), r.created)
                    for r in db.execute(sa.select(_atoms).order_by(_atoms.c.created, _atoms.c.name))]

    # ---------------------------------------------------------------- evaluations
    def begin_evaluation(self, variant: str, budget: str, seed: int, split: str = "val",
                         purpose: str = "") -> int | None:
        """Claims one (variant, budget, seed, split); None when it was already evaluated or is running."""
        with self._engine.begin() as db:
            try:
                inserted = db.execute(sa.insert(_evaluations).values(
                    variant_id=variant, budget=budget, seed=seed, split=split, purpose=purpose, status=RUNNING,
                    started=time.time()))
            except sa.exc.IntegrityError:
                return None
        return inserted.inserted_primary_key[0]

    def finish_evaluation(self, evaluation: int, result: EvalResult, log_path: str | None = None) -> None:
        with self._engine.begin() as db:
            db.execute(sa.update(_evaluations).where(_evaluations.c.id == evaluation).values(
                status=result.status.value, val_bpb=result.val_bpb, result=json.dumps(result.to_dict()),
                log_path=log_path, finished=time.time()))

    def requeue_interrupted(self) -> int:
        """Forgets evaluations a killed search left running, so they run again; how many there were."""
        with self._engine.begin() as db:
            return db.execute(sa.delete(_evaluations).where(_evaluations.c.status == RUNNING)).rowcount

    def evaluations(self, variant: str | None = None) -> list[Evaluation]:
        query = sa.select(_evaluations).order_by(_evaluations.c.id)
        if variant is not None:
            query = query.where(_evaluations.c.variant_id == variant)
        with self._engine.connect() as db:
            return [_evaluation(row) for row in db.execute(query)]

    def running(self) -> list[Evaluation]:
        query = sa.select(_evaluations).where(_evaluations.c.status == RUNNING).order_by(_evaluations.c.id)
        with self._engine.connect() as db:
            return [_evaluation(row) for row in db.execute(query)]

    # ---------------------------------------------------------------- decisions
    def decide(self, variant: str, kind: DecisionKind | str, *, rung: int | None = None, reference: str | None = None,
               detail: dict | None = None) -> None:
        if kind not in DECISIONS:
            raise ValueError(f"unknown decision {kind!r}: one of {', '.join(DECISIONS)}")
        with self._engine.begin() as db:
            db.execute(sa.insert(_decisions).values(variant_id=variant, kind=DecisionKind(kind).value, rung=rung,
                                                    reference=reference,
                                                    detail=json.dumps(detail or {}), time=time.time()))

    def decisions(self, variant: str | None = None) -> list[Decision]:
        query = sa.select(_decisions).order_by(_decisions.c.id)
        if variant is not None:
            query = query.where(_decisions.c.variant_id == variant)
        with self._engine.connect() as db:
            return [Decision(r.id, r.variant_id, r.kind, r.rung, r.reference, json.loads(r.detail), r.time)
                    for r in db.execute(query)]

    # ---------------------------------------------------------------- knob trials
    def link_trial(self, variant: str, study: str, trial_id: int) -> None:
        with self._engine.begin() as db:
            db.execute(sa.insert(_trials).values(variant_id=variant, study=study, trial_id=trial_id))

    def trials(self) -> dict[str, tuple[str, int]]:
        """variant id -> (study name, Optuna trial id) for every knob-trial variant."""
        with self._engine.connect() as db:
            return {r.variant_id: (r.study, r.trial_id) for r in db.execute(sa.select(_trials))}

    def close(self) -> None:
        self._engine.dispose()


def _sqlite_pragmas(connection, _record) -> None:
    # WAL lets `search status` and optuna-dashboard read while the search writes.
    # The busy timeout first: switching to WAL takes a lock that another process opening the same new
    # store may hold for a moment, and without the timeout that is "database is locked" at once.
    cursor = connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _variant(row) -> Variant:
    return Variant(row.id, row.source, json.loads(row.knobs), tuple(json.loads(row.parents)),
                   None if row.mutation is None else json.loads(row.mutation), row.origin, row.created,
                   None if row.atoms is None else tuple(json.loads(row.atoms)))


def _evaluation(row) -> Evaluation:
    result = None if row.result is None else EvalResult.from_dict(json.loads(row.result))
    return Evaluation(row.id, row.variant_id, row.budget, row.seed, row.split, row.purpose, row.status, row.val_bpb, result,
                      row.log_path, row.started, row.finished)
