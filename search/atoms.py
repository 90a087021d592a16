"""Atoms: changes rebased onto the baseline, and the stacks made of them.

An atom is one change relative to the baseline (a mutation that a 3-way merge can combine
with others), with what its proposer expected of it, the atoms it cannot go without and a
group (the levels of one knob exclude each other). A stack is a set of atoms; its source is
the baseline with every atom merged in. Which pairs merge is learned once and remembered.

`rebase` turns a child's own change (relative to whichever parent it was proposed on) into
an atom: a 3-way merge that also reverts the parent's lineage. A change that cannot be
separated from its ancestors' changes stays bundled with them and requires them.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from mutations.diff import structural_diff
from mutations.edits import Action, ApplyError, Edit, Mutation, apply_mutation
from mutations.knobs import Knob, extract_knobs, set_knobs
from mutations.merge import MergeConflict, merge, owning_class
from mutations.units import addressable_units
from population.additive import Prior
from trainer.errors import UserError
from trainer.program import SEPARATOR

KNOB_PREFIX = "knob:"
GRID_STEPS = 6                 # knob levels either side of the baseline's value
_GRID_RATIO = 3 ** 0.25        # between neighbouring levels of a rate or a size (6 steps: x 5.2)
_LOG_STEP = math.sqrt(3)       # a log-scaled knob's neighbouring levels: x / sqrt(3) and x * sqrt(3)
_LINEAR_SHARE = 0.25           # a linear knob's: a quarter of its range either way
_SIZE_SHARE = 0.25             # an integer size's: a quarter of its value, on its grid


@dataclass(frozen=True)
class Atom:
    name: str                       # catalog:rope, llm:claude-x#1a2b3c4d, knob:LEARNING_RATE=0.001732
    mutation: Mutation              # relative to the baseline
    origin: str                     # catalog:rope, llm:MODEL, knob, synthetic:..., tune
    description: str = ""
    prior: Prior | None = None      # what its proposer expected; None: nothing known
    requires: tuple[str, ...] = ()  # atoms it cannot go without (a bundled change, a move built on another)
    group: str = ""                 # atoms of one group exclude each other ("" = no group)
    bundled: bool = False           # it carries changes of the variants it was proposed on (it could not be separated)


def rebase(base: str, parent: str, child: str) -> tuple[Mutation, bool]:
    """The child's own change (child minus parent) as a change of the baseline, and whether it stayed bundled
    with the parent's changes (when the 3-way merge that reverts them conflicts)."""
    if parent == base:
        return structural_diff(base, child), False
    try:
        to_baseline = structural_diff(parent, base)
        combined = merge(parent, to_baseline, structural_diff(parent, child))
        return structural_diff(base, apply_mutation(parent, combined)), False
    except (MergeConflict, ApplyError):
        return structural_diff(base, child), True


@dataclass
class Atoms:
    """The search's atoms over one baseline: stacks as sources, and which atoms can share a stack."""

    base: str
    by_name: dict[str, Atom] = field(default_factory=dict)
    _merges: dict[frozenset[str], bool] = field(default_factory=dict)
    _sources: dict[frozenset[str], str | None] = field(default_factory=dict)
    _closures: dict[str, frozenset[str]] = field(default_factory=dict)
    _touched: dict[str, frozenset[str]] = field(default_factory=dict)

    def add(self, atom: Atom) -> None:
        self.by_name[atom.name] = atom
        self._closures.clear()

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def __iter__(self):
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    def with_key(self, key: str) -> Atom | None:
        """The atom whose change is this mutation key (the same change under another name)."""
        return next((a for a in self.by_name.values() if a.mutation.key == key), None)

    # ---------------------------------------------------------------- feasibility
    def compatible(self, a: str, b: str) -> bool:
        """Whether two atoms can share a stack: not one group, and their changes merge."""
        first, second = self.by_name[a], self.by_name[b]
        if first.group and first.group == second.group:
            return False
        if (second.bundled and a in self.closure([b])) or (first.bundled and b in self.closure([a])):
            return True  # one carries the other's change
        if not self._touches(a) & self._touches(b):
            return True  # disjoint units always merge
        pair = frozenset((a, b))
        if pair not in self._merges:
            self._merges[pair] = _merges(self.base, first.mutation, second.mutation)
        return self._merges[pair]

    def _touches(self, name: str) -> frozenset[str]:
        if name not in self._touched:
            self._touched[name] = _touches(self.by_name[name].mutation)
        return self._touched[name]

    def closure(self, names: Iterable[str]) -> frozenset[str]:
        """The atoms with everything they require, transitively (unknown requirements are dropped)."""
        names = list(names)
        if len(names) == 1:
            if names[0] not in self._closures:
                self._closures[names[0]] = self._closure(names)
            return self._closures[names[0]]
        return self._closure(names)

    def _closure(self, names: list[str]) -> frozenset[str]:
        found, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name in found or name not in self.by_name:
                continue
            found.add(name)
            todo.extend(self.by_name[name].requires)
        return frozenset(found)

    def feasible(self, stack: Iterable[str]) -> bool:
        stack = frozenset(stack)
        if any(r not in stack for name in stack for r in self.by_name[name].requires):
            return False
        return all(self.compatible(a, b) for a, b in itertools.combinations(sorted(stack), 2))

    # ---------------------------------------------------------------- sources
    def source(self, stack: Iterable[str]) -> str | None:
        """The baseline with every atom of the stack merged in; None when the merge fails."""
        key = frozenset(stack)
        if key not in self._sources:
            self._sources[key] = self._build(key)
        return self._sources[key]

    def _build(self, stack: frozenset[str]) -> str | None:
        if not stack:
            return self.base
        carried = {r for name in stack if self.by_name[name].bundled for r in self.closure(self.by_name[name].requires)}
        # a bundled atom carries the changes it could not be separated from (its mutation includes them): merge it alone
        mutations = [self.by_name[name].mutation for name in sorted(stack - carried)]
        try:
            # Changes on disjoint units combine by putting their edits side by side; only those that touch the same
            # units need the 3-way merge (a merge costs a parse and an apply: most atoms are disjoint knob lines).
            clusters: list[tuple[set[str], Mutation]] = []
            for mutation in mutations:
                touched = set(_touches(mutation))
                overlapping = [c for c in clusters if c[0] & touched]
                for cluster in overlapping:
                    clusters.remove(cluster)
                    touched |= cluster[0]
                    mutation = merge(self.base, cluster[1], mutation)
                clusters.append((touched, mutation))
            edits = tuple(edit for _, mutation in clusters for edit in mutation.edits)
            return apply_mutation(self.base, Mutation(edits))
        except (MergeConflict, ApplyError):
            return None


def _touches(mutation: Mutation) -> frozenset[str]:
    """The units an edit can collide on: its targets, the classes that own them, the units inserts follow."""
    found = set()
    for edit in mutation.edits:
        found.add(edit.target)
        if (owner := owning_class(edit.target)) is not None:
            found.add(owner)
        if edit.after:
            found.add(edit.after)
    return frozenset(found)


def _merges(base: str, a: Mutation, b: Mutation) -> bool:
    try:
        merge(base, a, b)
    except (MergeConflict, ApplyError):
        return False
    return True


# ---------------------------------------------------------------- knob levels
def knob_atoms(base: str, device: str) -> list[tuple[Atom, float]]:
    """Every tunable numeric knob of the baseline at each level of its grid (knob_grid), one atom per level,
    grouped per knob, with the level's coordinate."""
    units = addressable_units(base)
    atoms = []
    for knob in extract_knobs(base, device):
        for value, position in knob_grid(knob):
            atom = knob_atom(base, device, knob, value, units)
            if atom is not None:
                atoms.append((atom, position))
    return atoms


def knob_atom(base: str, device: str, knob: Knob, value: float | int, units: dict | None = None) -> Atom | None:
    """The baseline with one knob at `value`, as an atom of that knob's group; None when the script refuses it."""
    try:
        source = set_knobs(base, {knob.name: value}, device)
    except UserError:  # breaks a constraint between knobs (HEADS must divide WIDTH)
        return None
    if source == base:
        return None
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    name = f"{KNOB_PREFIX}{knob.name}={shown}"
    description = f"{knob.name} {knob.default} -> {shown}"
    unit = (units or {}).get(knob.name.split("[")[0])
    if unit is None:
        mutation = structural_diff(base, source, name, description)
    else:  # the knob's own statement with the literal rewritten: the edit the structural diff finds, without it
        local_name = knob.name.rpartition(SEPARATOR)[2]  # a knob of model.py is `model.py::NAME`
        mutation = Mutation((Edit(Action.REPLACE, unit.address, set_knobs(unit.code, {local_name: value}, device),
                                  base_hash=unit.hash),), name, description)
    return Atom(name, mutation, "knob", description, group=f"{KNOB_PREFIX}{knob.name}")


def knob_grid(knob: Knob) -> list[tuple[float | int, float]]:
    """The levels a knob is tuned over, with their coordinates (0 = its value in the baseline): for rates and
    sizes GRID_STEPS steps of x 3^(1/4) either way (down to a fifth, up to five times: the coordinate is the log of
    the ratio), for fractions GRID_STEPS steps of a twelfth of the range (the coordinate in units of the range).
    Booleans, strings and fixed knobs have none."""
    d, x = knob.distribution, knob.default
    if d.kind in ("fixed", "choice") or isinstance(x, (bool, str)):
        return []
    steps = [k for k in range(-GRID_STEPS, GRID_STEPS + 1) if k]
    if d.kind == "int":  # sizes: every value on the knob's step within its range, or a geometric spread of them
        step = d.step or 1
        values = list(range(d.low, d.high + 1, step))
        if len(values) > 2 * GRID_STEPS:
            values = sorted({min(values, key=lambda v: abs(v - x * _GRID_RATIO ** k)) for k in steps})
        return [(v, math.log(v / x) if x > 0 else (v - x) / (d.high - d.low)) for v in values if v != x and v > 0]
    if d.kind == "float":
        width = (d.high - d.low) / (2 * GRID_STEPS)
        raw = [(x + k * width, k * width / (d.high - d.low)) for k in steps]
        raw = [(v, p) for v, p in raw if d.low <= v <= d.high]
    elif x > 0:
        raw = [(x * _GRID_RATIO ** k, k * math.log(_GRID_RATIO)) for k in steps]
    else:
        return []
    found = {}
    for value, position in raw:
        value = _tidy(value, x)
        if value != x and value not in found:
            found[value] = position
    return sorted(found.items(), key=lambda item: item[1])


def curve_length(knob: Knob) -> float:
    """How far apart (in knob_grid coordinates) two levels of this knob may be and still move val_bpb alike."""
    linear = knob.distribution.kind == "float" or knob.default <= 0
    return 0.25 if linear else 0.8


def neighbours(knob: Knob, reach: int = 1) -> list[float | int]:
    """The values `reach` steps either side of a knob's default on its natural scale, inside its range when it
    has one: x / sqrt(3)^reach and x * sqrt(3)^reach for rates, a quarter of the range for fractions, a quarter of
    the value on the knob's grid for sizes. Booleans, strings and fixed knobs have none."""
    d, x = knob.distribution, knob.default
    if d.kind in ("fixed", "choice") or isinstance(x, (bool, str)):
        return []
    if d.kind == "log" and x > 0:
        values = [x / _LOG_STEP ** reach, x * _LOG_STEP ** reach]
    elif d.kind == "float":
        width = _LINEAR_SHARE * (d.high - d.low) * reach
        values = [max(d.low, x - width), min(d.high, x + width)]
    elif d.kind == "int":
        step = d.step or 1
        size = max(step, round(_SIZE_SHARE * x / step) * step) * reach
        if d.log and not d.step:
            values = [max(1, x // 2 ** reach), x * 2 ** reach]
        else:
            values = [max(d.low, x - size), x + size]
    else:
        return []
    shown = [_tidy(v, x) for v in values]
    return [v for v in dict.fromkeys(shown) if v != x and (not isinstance(v, float) or math.isfinite(v))]


def _tidy(value: float, like: object) -> float | int:
    if isinstance(like, int):
        return int(round(value))
    if abs(value) < 1e-9 * max(1.0, abs(like)):  # 0.1 - 3 * (0.1 / 3) is 1.4e-17, not a level of its own
        return 0.0
    return float(f"{value:.4g}")
