from __future__ import annotations

import pytest

from trainer.budget import Budget, BudgetUnit
from trainer.errors import UserError


@pytest.mark.parametrize("text, amount, unit", [
    ("30s", 30, BudgetUnit.SECONDS), ("2min", 120, BudgetUnit.SECONDS), ("1h", 3600, BudgetUnit.SECONDS),
    ("500k", 500_000, BudgetUnit.TOKENS), ("1.5M", 1_500_000, BudgetUnit.TOKENS),
    ("600000tok", 600_000, BudgetUnit.TOKENS), ("2G", 2 * 10**9, BudgetUnit.TOKENS),
    ("2.5Tflop", 2.5e12, BudgetUnit.FLOPS), ("300Gflop", 3e11, BudgetUnit.FLOPS), ("1e15flop", 1e15, BudgetUnit.FLOPS),
    ("4PFLOPs", 4e15, BudgetUnit.FLOPS),
])
def test_budget_forms(text, amount, unit):
    budget = Budget.parse(text)
    assert (budget.amount, budget.unit) == (amount, unit)
    assert Budget.parse(str(budget)) == budget


@pytest.mark.parametrize("text, hint", [("5m", "ambiguous"), ("300", "needs a unit"), ("10 parsecs", "unknown budget unit"),
                                        ("fast", "cannot read"), ("0s", "positive")])
def test_bad_budgets_say_what_to_write(text, hint):
    with pytest.raises(UserError, match=hint):
        Budget.parse(text)


def test_scaled_budget_keeps_the_unit():
    assert Budget.parse("900k").scaled(1 / 9) == Budget(100_000, BudgetUnit.TOKENS)
    assert Budget.parse("60s").scaled(0.5) == Budget(30.0, BudgetUnit.SECONDS)
    assert Budget.parse("2Tflop").scaled(0.25) == Budget(5e11, BudgetUnit.FLOPS)
