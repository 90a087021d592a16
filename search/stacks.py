"""The best stack under one set of effect values, within the atoms' constraints.

A local search over stacks: from the empty stack, take the move that lowers the value most
(add an atom together with what it requires, swap an atom for another of its group, remove an
atom with what requires it) until no move lowers it. With main effects alone this adds every
atom whose effect is negative, best first, skipping those that cannot merge with the stack;
interactions are taken into account move by move.
"""
from __future__ import annotations

from collections.abc import Iterable

from population.additive import Effects
from search.atoms import Atoms

_MOST_MOVES = 200
_EPSILON = 1e-12


def best_stack(effects: Effects, candidates: Iterable[str], atoms: Atoms,
               forbidden: Iterable[frozenset[str]] = (), start: Iterable[str] = ()) -> frozenset[str]:
    """The stack of candidates with the lowest value (local optimum), feasible and not a forbidden stack."""
    pool = [a for a in candidates if a in atoms]
    forbidden = set(forbidden)
    stack = frozenset(start)
    current = effects.value(stack)
    for _ in range(_MOST_MOVES):
        best, best_value = None, current - _EPSILON
        for move in _moves(stack, pool, atoms):
            if move in forbidden or not _allowed(move, stack, atoms):
                continue
            value = effects.value(move)
            if value < best_value:
                best, best_value = move, value
        if best is None:
            return stack
        stack, current = best, best_value
    return stack


def flips(stack: frozenset[str], pool: Iterable[str], atoms: Atoms) -> list[frozenset[str]]:
    """Every feasible stack one move away: one atom added (with its requirements), swapped or removed."""
    return [m for m in _moves(stack, list(pool), atoms) if _allowed(m, stack, atoms)]


def _moves(stack: frozenset[str], pool: list[str], atoms: Atoms):
    for name in pool:
        if name in stack:
            yield stack - {d for d in stack if name in atoms.closure([d])}  # without it and whatever needs it
            continue
        group = atoms.by_name[name].group
        rest = stack - {a for a in stack if group and atoms.by_name[a].group == group}
        yield rest | atoms.closure([name])


def _allowed(move: frozenset[str], stack: frozenset[str], atoms: Atoms) -> bool:
    """Feasible, checking only the pairs the move adds (the stack itself is feasible)."""
    added = move - stack
    if not added:
        return True
    groups = [atoms.by_name[a].group for a in move if atoms.by_name[a].group]
    if len(groups) != len(set(groups)):
        return False
    if any(r not in move for a in move for r in atoms.by_name[a].requires):
        return False
    return all(atoms.compatible(a, b) for a in added for b in move if a != b)
