"""The run store on a real SQLite file: duplicates, evaluation claims, SIGKILL safety, Optuna beside it."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import optuna
import sqlalchemy as sa

from population.store import Store
from trainer.result import CurvePoint, EvalResult, Status

SOURCE = "from trainer import runtime\n"


def test_a_variant_is_stored_once_per_source_and_knobs(tmp_path):
    store = Store.in_run_dir(tmp_path)
    base, new = store.add_variant(SOURCE, origin="baseline")
    again, new_again = store.add_variant(SOURCE, origin="catalog:relu2")
    tuned, _ = store.add_variant(SOURCE, knobs={"LEARNING_RATE": 3e-3}, parents=(base.id,), origin="tune",
                                 mutation={"name": "tune", "edits": []})
    assert new and not new_again and again == base
    assert tuned.id != base.id and tuned.parents == (base.id,) and tuned.knobs == {"LEARNING_RATE": 3e-3}
    assert [v.id for v in store.variants()] == [base.id, tuned.id]


def test_an_evaluation_is_claimed_once_and_its_result_kept(tmp_path):
    store = Store.in_run_dir(tmp_path)
    variant, _ = store.add_variant(SOURCE, origin="baseline")
    claim = store.begin_evaluation(variant.id, "300k", seed=0)
    assert store.begin_evaluation(variant.id, "300k", seed=0) is None  # never evaluated twice
    result = EvalResult(Status.OK, val_bpb=3.67, steps=146, curve=(CurvePoint(0.25, 37, 75776, 5.0, 4.3, 2.9),))
    store.finish_evaluation(claim, result, log_path="logs/1.log")
    (stored,) = Store.in_run_dir(tmp_path).evaluations(variant.id)
    assert (stored.status, stored.val_bpb, stored.log_path) == ("ok", 3.67, "logs/1.log")
    assert stored.result == result


def test_a_killed_search_loses_nothing_finished_and_requeues_what_was_running(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from population.store import Store
        from trainer.result import EvalResult, Status
        store = Store.in_run_dir({str(tmp_path)!r})
        variant, _ = store.add_variant("x = 1\\n", origin="baseline")
        store.finish_evaluation(store.begin_evaluation(variant.id, "300k", 0), EvalResult(Status.OK, val_bpb=3.5))
        store.begin_evaluation(variant.id, "300k", 1)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script])
    assert killed.returncode == -signal.SIGKILL
    store = Store.in_run_dir(tmp_path)
    assert [(e.seed, e.status) for e in store.evaluations()] == [(0, "ok"), (1, "running")]
    assert store.requeue_interrupted() == 1
    variant = store.variants()[0]
    assert store.begin_evaluation(variant.id, "300k", 1) is not None
    assert store.begin_evaluation(variant.id, "300k", 0) is None


def test_optuna_studies_share_the_database(tmp_path):
    store = Store.in_run_dir(tmp_path)
    store.set_meta("options", {"population": 8})
    study = optuna.create_study(study_name="variant-abc", storage=store.url)
    study.enqueue_trial({"x": 1.0})
    assert optuna.load_study(study_name="variant-abc", storage=store.url).study_name == "variant-abc"
    tables = set(sa.inspect(sa.create_engine(store.url)).get_table_names())
    assert {"studies", "trials", "evotrain_variants", "evotrain_evaluations"} <= tables
    assert Store(store.url).meta() == {"options": {"population": 8}}


def test_sqlite_runs_in_wal_mode_so_readers_do_not_block_the_search(tmp_path):
    store = Store.in_run_dir(tmp_path)
    store.add_variant(SOURCE, origin="baseline")
    with sa.create_engine(store.url).connect() as reader:
        assert reader.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"


def test_processes_opening_a_new_store_at_once_do_not_trip_over_each_other(tmp_path):
    # A search creating its store while `search status` (or a test) opens it: both see no tables.
    script = textwrap.dedent("""
        import sys
        from population.store import Store
        Store(f"sqlite:///{sys.argv[1]}").close()
    """)
    for attempt in range(5):
        path = tmp_path / f"race{attempt}.db"
        openers = [subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE)
                   for _ in range(4)]
        for opener in openers:
            _, stderr = opener.communicate(timeout=60)
            assert opener.returncode == 0, stderr.decode()[-500:]
