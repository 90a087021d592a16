"""The end of every search, whatever the strategy: the held-out test, the exported patch, the stored result.

The test runs the strategy's answer and the baseline on the held-out test split with fresh
seeds that no decision saw; that paired difference, with its interval, is the reported number.
"""
from __future__ import annotations

from pathlib import Path

from mutations.patch import unified_diff
from population.stats import Paired, paired
from search.context import Search
from search.evaluator import Request
from search.strategies._base import Outcome, Program
from trainer.program import Program as Files


def held_out(search: Search, stack: str) -> Program:
    """The stack against the baseline on the test split, fresh seeds (a Steps program); None for the baseline."""
    if stack == search.baseline.id:
        return None
    seeds = search.ladder.test_seeds(search.config.test_seeds)
    budget = search.top_budget
    yield [Request(v, budget, s, split="test", purpose="test") for v in (stack, search.baseline.id) for s in seeds]
    return paired(search.scores(stack, budget, seeds, "test"), search.scores(search.baseline.id, budget, seeds, "test"))


def result(search: Search, outcome: Outcome, test: Paired | None, base_source: str) -> dict:
    """What the run found, as stored in meta "result" (analysis, export and status read it); writes the files."""
    stack = search.variant(outcome.stack)
    val = paired(search.scores(stack.id, search.top_budget), search.scores(search.baseline.id, search.top_budget))
    run_dir = Path(search.config.run_dir)
    files = Files.parse(stack.source)
    best = run_dir / ("best" if len(files.files) > 1 else "best_train.py")  # a folder for several files
    files.save(best)
    (run_dir / "best.patch").write_text(unified_diff(base_source, stack.source))
    return {"strategy": search.config.strategy, "stack": stack.id, "members": [row["atom"] for row in outcome.ablation],
            "ablation": outcome.ablation, **outcome.extra,
            "val_delta": None if val is None or stack.id == search.baseline.id else val.to_dict(),
            "test_delta": None if test is None else test.to_dict(),
            "files": {"patch": str(run_dir / "best.patch"), "source": str(best)}}


def headline(result: dict) -> str:
    test = result["test_delta"]
    if test is None:
        return "no change beat the baseline: nothing to test"
    return f"stack of {len(result['members'])}: held-out test delta {Paired.from_dict(test)}"
