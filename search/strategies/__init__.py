"""Search strategies behind the ask/tell seam (_base.py): the registry `search evolve --strategy` picks from."""
from __future__ import annotations

from search.strategies._base import Outcome, Signal, Steps, Strategy, View
from search.strategies.additive import AdditiveStrategy
from search.strategies.asha import AshaStrategy
from search.strategies.greedy import GreedyStrategy
from search.strategies.tpe import TpeStrategy

__all__ = ["STRATEGIES", "Outcome", "Signal", "Steps", "Strategy", "View"]

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (AdditiveStrategy, AshaStrategy, GreedyStrategy,
                                                                      TpeStrategy)}
