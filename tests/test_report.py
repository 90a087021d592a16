"""`search report`: one self-contained HTML file with every section and plot, for a finished run (conftest's
finished_run) and for a run that has not reached the combine step (a store filled by hand)."""
from __future__ import annotations

import base64
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import analysis
from analysis.report import EMPTY, SECTIONS, render
from population.store import Store
from search.config import EvolveConfig
from trainer.result import EvalResult, Status

PNG = b"\x89PNG\r\n\x1a\n"
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def search(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, timeout=180)


def plots(page: str) -> list[str]:
    """The data-plot names of the page's images, in order."""
    return re.findall(r'<img [^>]*data-plot="([^"]+)"', page)


@pytest.fixture(scope="module")
def finished(finished_run, tmp_path_factory):
    """(the report's HTML, the run) of conftest's finished run, written with -o outside its folder."""
    path = tmp_path_factory.mktemp("report") / "out" / "report.html"
    result = search("report", str(finished_run), "-o", str(path))
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout
    run = analysis.load(finished_run)
    yield path.read_text(encoding="utf-8"), run
    run.close()


# ---------------------------------------------------------------- a finished run
def test_the_report_is_one_self_contained_page(finished):
    page, _ = finished
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "<script" not in page and "<link" not in page
    for src in re.findall(r'<img [^>]*src="([^"]+)"', page):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)


def test_every_section_and_plot_is_there(finished):
    page, run = finished
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page, title
    expected = ["progress", "ablation", "fidelity", "lineage"] + (["knob-importance"] if len(run.knob_importance)
                                                                  else [])
    assert plots(page) == expected
    assert page.count("<img") == len(expected)
    if not len(run.knob_importance):
        assert "no study had enough complete trials" in page


def test_it_shows_the_test_delta_and_every_atom(finished):
    page, run = finished
    test = run.test_result
    assert test is not None, "the tiny search ran no held-out test: see TINY_EVOLVE"
    assert f"{test['mean']:+.4f} bpb" in page and f"n={test['n']}" in page
    atoms = list(run.ablation["atom"])
    assert atoms
    for atom in atoms:
        assert page.count(html.escape(atom)) >= 2  # the stack's members and the ablation table
    total = run.stack_total()
    assert f"sum of add-one deltas {total['sum_add_one']:+.4f}" in page


def test_the_default_path_is_in_the_run_directory(finished_run, tmp_path):
    copy = shutil.copytree(finished_run, tmp_path / "run")
    result = search("report", str(copy))
    assert result.returncode == 0, result.stderr
    assert (copy / "report.html").is_file() and "report.html" in result.stdout


@pytest.mark.parametrize("args, words", [
    (["report", "no/such/run"], "no such run directory"),
    (["report", "--storage", "sqlite:///{run}/evotrain.db"], "-o PATH"),
])
def test_bad_input_is_one_line(finished_run, args, words):
    result = search(*(a.format(run=finished_run) for a in args))
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and words in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")
def test_a_browser_renders_it(finished, tmp_path):
    from PIL import Image

    page, _ = finished
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1280,4000", (tmp_path / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 50_000
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 200  # plots and text, not a blank page


# ---------------------------------------------------------------- a run before the combine step
def _evaluate(store: Store, variant: str, budget: str, seed: int, val_bpb: float) -> None:
    evaluation = store.begin_evaluation(variant, budget, seed)
    store.finish_evaluation(evaluation, EvalResult(status=Status.OK, val_bpb=val_bpb, wall_seconds=2.0,
                                                   training_seconds=1.0))


@pytest.fixture
def searching(tmp_path) -> Path:
    """A run still in its search phase: the baseline measured on both rungs, two children on the low one."""
    store = Store.in_run_dir(tmp_path)
    store.set_meta("options", EvolveConfig(run_dir=tmp_path, budget="8k", fractions=(0.5, 1.0), seeds=(1, 2)).to_dict())
    base = store.add_variant("base", origin="baseline")[0].id
    store.set_meta("baseline", {"id": base})
    store.set_meta("phase", "search")
    store.set_meta("noise", {"sd": 0.01, "mean": 5.05, "n": 2, "budget": "8k"})
    for budget, seed, value in (("4k", 0, 6.0), ("8k", 0, 5.0), ("8k", 1, 5.1)):
        _evaluate(store, base, budget, seed, value)
    for name, value in (("a", 5.8), ("b", 6.2)):
        child = store.add_variant(name, parents=(base,), origin=f"catalog:{name}")[0].id
        _evaluate(store, child, "4k", 0, value)
    store.close()
    return tmp_path


def rendered(run_dir: Path) -> str:
    run = analysis.load(run_dir)
    try:
        return render(run)
    finally:
        run.close()


def test_a_run_before_the_combine_step_still_renders(searching):
    page = rendered(searching)
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page, title
    assert plots(page) == ["progress"]
    for reason in ("the held-out test runs after the combine step", "the ablation runs in the combine step",
                   "no variant has finished two rungs", "no variant has reached the top rung or been accepted",
                   "no study had enough complete trials", "the combine step has not ablated a stack",
                   "nothing is in the population", "the search has taken no decision"):
        assert f"{EMPTY}: {reason}" in page, reason
    assert "baseline seed sd 0.01 over 2 seeds at 8k" in page


def test_a_stack_that_is_the_baseline_says_so(searching):
    store = Store.in_run_dir(searching)
    base = store.meta()["baseline"]["id"]
    store.set_meta("result", {"stack": base, "members": [], "ablation": []})
    store.close()
    page = rendered(searching)
    assert "the baseline (no change beat it)" in page
    assert page.count(f"{EMPTY}: no change beat the baseline, so there was no stack to ablate or test") == 3


def test_an_empty_run_has_only_notes(tmp_path):
    store = Store.in_run_dir(tmp_path)
    store.set_meta("options", EvolveConfig(run_dir=tmp_path, budget="8k", fractions=(0.5, 1.0), seeds=(1, 2)).to_dict())
    store.set_meta("baseline", {"id": store.add_variant("base", origin="baseline")[0].id})
    store.close()
    page = rendered(tmp_path)
    assert "<img" not in page
    assert f"{EMPTY}: no evaluation has finished yet" in page
    assert f"{EMPTY}: the baseline has not finished its top-rung seeds" in page
