"""The search's one trust check: every result passes `admit` in the evaluator before it is stored."""
from __future__ import annotations

import pytest

from population.store import Store
from search.evaluator import Evaluator, Request
from search.executors import LocalExecutor, Slot
from trainer.budget import Budget
from trainer.errors import UserError
from trainer.result import Status
from trainer.trust import TrustPolicy

PRINTS_ITS_SCORE = "print('val_bpb:          0.500000')\n"  # autoresearch style: no runtime


def stored_result(tmp_path, spec, trust: TrustPolicy):
    store = Store.in_run_dir(tmp_path)
    variant, _ = store.add_variant(PRINTS_ITS_SCORE, origin="baseline")
    with LocalExecutor([Slot("cpu", 1)]) as executor:
        evaluator = Evaluator(store, executor, spec, tmp_path, trust=trust)
        request = Request(variant.id, Budget.parse("4k"), seed=0)
        evaluator.run_all([(request, PRINTS_ITS_SCORE)])
    (evaluation,) = store.evaluations(variant.id)
    store.close()
    return evaluation.result


def test_the_search_stores_a_printed_score_as_invalid_unless_compatibility_mode_was_asked_for(tmp_path, make_spec):
    refused = stored_result(tmp_path / "strict", make_spec(), TrustPolicy())
    assert refused.status is Status.INVALID and refused.val_bpb is None and "--compat" in refused.message
    allowed = stored_result(tmp_path / "compat", make_spec(), TrustPolicy(allow_untrusted=True))
    assert allowed.status is Status.OK and allowed.val_bpb == 0.5 and allowed.trusted is False


def test_a_policy_the_machine_cannot_meet_is_refused_before_anything_runs(tmp_path, make_spec, monkeypatch):
    monkeypatch.setattr("trainer.isolation.namespaces_available", lambda: False)
    store = Store.in_run_dir(tmp_path)
    with LocalExecutor([Slot("cpu", 1)]) as executor, pytest.raises(UserError, match="--require-isolation"):
        Evaluator(store, executor, make_spec(), tmp_path, trust=TrustPolicy(require_isolation=True))
    store.close()
