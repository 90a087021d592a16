"""The built-in catalog of research moves: `MOVES` maps each name to its Move."""
from __future__ import annotations

from mutations.catalog import blocks, embeddings, training
from mutations.catalog._base import Applicability, Move, NotApplicable

__all__ = ["MOVES", "Applicability", "Move", "NotApplicable", "get"]


def _collect() -> dict[str, Move]:
    moves: dict[str, Move] = {}
    for module in (blocks, embeddings, training):
        for move_class in module.MOVES:
            move = move_class()
            if move.name in moves:
                raise RuntimeError(f"two catalog moves are named {move.name!r}")
            moves[move.name] = move
    return moves


MOVES: dict[str, Move] = _collect()


def get(name: str) -> Move:
    from trainer.errors import UserError

    if name not in MOVES:
        raise UserError(f"unknown move {name!r}; `search catalog` lists them")
    return MOVES[name]
