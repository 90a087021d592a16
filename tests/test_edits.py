"""The edit model: apply, structural diff, merge, revert and text patches, on real sources."""
from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mutations.diff import invert, structural_diff
from mutations.edits import Action, ApplyError, Edit, Mutation, apply_mutation
from mutations.merge import MergeConflict, merge
from mutations.patch import from_node_edits, from_search_replace, unified_diff
from trainer.baselines import BASELINE

BASE = BASELINE.read_text()
LINES = BASE.splitlines(keepends=True)


def changed(old: str, new: str, source: str = BASE) -> str:
    assert source.count(old) == 1, old
    return source.replace(old, new)


# ---------------------------------------------------------------- line-level edits for property tests
@st.composite
def line_edit(draw):
    """A random small edit of the baseline, as (line index, replacement lines, kind)."""
    index = draw(st.integers(0, len(LINES) - 1))
    line = LINES[index]
    indent = re.match(r"\s*", line).group(0).rstrip("\n")
    kind = draw(st.sampled_from(["insert", "delete", "number", "comment", "duplicate"]))
    if kind == "insert":
        return index, [indent + draw(st.sampled_from(["pass", "_probe = 1", "print('x')"])) + "\n", line], kind
    if kind == "delete":
        return index, [], kind
    if kind == "number":
        number = draw(st.integers(0, 999))
        return index, [re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", str(number), line, count=1)], kind
    if kind == "comment":
        return index, [indent + "# a note\n", line], kind
    return index, [line, line], kind


def with_edits(*edits) -> str:
    lines = list(LINES)
    for index, replacement, _ in sorted(edits, reverse=True):
        lines[index : index + 1] = replacement
    return "".join(lines)


def parses(source: str) -> bool:
    try:
        compile(source, "train.py", "exec")
    except SyntaxError:
        return False
    return True


PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


@PROPERTY
@given(st.lists(line_edit(), min_size=1, max_size=3, unique_by=lambda e: e[0]))
def test_apply_of_structural_diff_reproduces_the_new_source(edits):
    new = with_edits(*edits)
    assume(new != BASE and parses(new))
    mutation = structural_diff(BASE, new)
    assert apply_mutation(BASE, mutation) == new
    if all(kind == "number" for _, _, kind in edits):  # the structure stays: one unit edit per change at most
        assert len(mutation.edits) <= len(edits)


@PROPERTY
@given(line_edit())
def test_apply_then_revert_round_trips(edit):
    new = with_edits(edit)
    assume(new != BASE and parses(new))
    mutation = structural_diff(BASE, new)
    assert apply_mutation(new, invert(BASE, mutation)) == BASE


@settings(PROPERTY, max_examples=15)
@given(line_edit(), line_edit())
def test_merge_of_disjoint_mutations_is_order_independent(first, second):
    a_source, b_source = with_edits(first), with_edits(second)
    assume(first[0] != second[0] and a_source != BASE and b_source != BASE and parses(a_source) and parses(b_source))
    a, b = structural_diff(BASE, a_source, "a"), structural_diff(BASE, b_source, "b")
    assume(a.targets.isdisjoint(b.targets))
    merged_ab = apply_mutation(BASE, merge(BASE, a, b))
    assert merged_ab == apply_mutation(BASE, merge(BASE, b, a))
    if not any(e.action is Action.INSERT for e in a.edits + b.edits):
        assert merged_ab == with_edits(first, second)


# ---------------------------------------------------------------- apply
def test_an_edit_of_a_missing_target_fails_naming_it():
    with pytest.raises(ApplyError, match="no Decoder.forward") as error:
        apply_mutation(BASE, Mutation((Edit(Action.REPLACE, "Decoder.forward", "def forward(self):\n    pass\n"),)))
    assert error.value.reason == "missing_target"


def test_a_stale_edit_fails_instead_of_misapplying():
    mutation = structural_diff(BASE, changed("LEARNING_RATE = 1e-3", "LEARNING_RATE = 3e-3"))
    moved = changed("LEARNING_RATE = 1e-3", "LEARNING_RATE = 2e-3")
    with pytest.raises(ApplyError, match="LEARNING_RATE has changed") as error:
        apply_mutation(moved, mutation)
    assert error.value.reason == "stale_target"


def test_a_mutation_that_changes_nothing_is_refused():
    unit_code = "LEARNING_RATE = 1e-3                         # AdamW peak learning rate\n"
    same = Mutation((Edit(Action.REPLACE, "LEARNING_RATE", unit_code),))
    with pytest.raises(ApplyError, match="changes nothing"):
        apply_mutation(BASE, same)


def test_edits_are_addressed_by_qualified_name():
    new = changed("F.gelu(self.fc(x))", "F.relu(self.fc(x)).square()")
    new = changed("LEARNING_RATE = 1e-3", "LEARNING_RATE = 3e-3", new)
    new = changed("import math\n", "import math\nimport time\n", new)
    targets = {e.target for e in structural_diff(BASE, new).edits}
    assert targets == {"MLP.forward", "LEARNING_RATE", "<module>"}


def test_an_edit_inside_the_module_level_loop_stays_small():
    new = changed("    optimizer.step()\n", "    optimizer.step()\n    print('stepped')\n")
    (edit,) = structural_diff(BASE, new).edits
    assert edit.action is Action.REPLACE and edit.target.startswith("<stmt@")
    assert edit.code.lstrip().startswith("while runtime.keep_training():")


def test_a_new_class_is_inserted_after_its_predecessor():
    new = changed("class MLP(nn.Module):", "class Identity(nn.Module):\n    pass\n\n\nclass MLP(nn.Module):")
    (edit,) = structural_diff(BASE, new).edits
    assert (edit.action, edit.target, edit.after) == (Action.INSERT, "Identity", "CausalSelfAttention")


def test_mutation_round_trips_through_json():
    mutation = structural_diff(BASE, changed("BETA2 = 0.95", "BETA2 = 0.99"), "catalog:beta", "a test")
    assert Mutation.from_dict(mutation.to_dict()) == mutation


# ---------------------------------------------------------------- merge
def test_identical_edits_count_once():
    a = structural_diff(BASE, changed("BETA2 = 0.95", "BETA2 = 0.99"), "a")
    b = structural_diff(BASE, changed("BETA2 = 0.95", "BETA2 = 0.99"), "b")
    assert len(merge(BASE, a, b).edits) == 1


def test_overlapping_edits_of_one_function_merge_statement_by_statement():
    qk = changed("        y = F.scaled_dot_product_attention",
                 "        q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))\n"
                 "        y = F.scaled_dot_product_attention")
    scale = changed("is_causal=True, dropout_p", "is_causal=True, scale=0.12, dropout_p")
    merged = apply_mutation(BASE, merge(BASE, structural_diff(BASE, qk, "qk"), structural_diff(BASE, scale, "scale")))
    assert "F.rms_norm(q, (q.size(-1),))" in merged and "scale=0.12" in merged


def test_a_true_conflict_is_reported_with_both_sides():
    relu = structural_diff(BASE, changed("F.gelu(self.fc(x))", "F.relu(self.fc(x)).square()"), "relu2")
    silu = structural_diff(BASE, changed("F.gelu(self.fc(x))", "F.silu(self.fc(x))"), "silu")
    with pytest.raises(MergeConflict) as error:
        merge(BASE, relu, silu)
    conflict = error.value.conflict
    assert conflict.target == "MLP.forward"
    assert {"F.relu" in conflict.ours, "F.relu" in conflict.theirs} == {True, False}
    assert "F.silu" in conflict.ours + conflict.theirs


# ---------------------------------------------------------------- text forms
def test_unified_diff_is_accepted_by_git_apply(tmp_path):
    new = changed("F.gelu(self.fc(x))", "F.relu(self.fc(x)).square()")
    new = changed("runtime.finish(model)\n", "runtime.finish(model)", new)  # no newline at end of file
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "train.py").write_text(BASE)
    (tmp_path / "best.patch").write_text(unified_diff(BASE, new))
    subprocess.run(["git", "apply", "best.patch"], cwd=tmp_path, check=True)
    assert (tmp_path / "train.py").read_text() == new


def test_search_replace_blocks_are_normalised_to_node_edits():
    answer = ("<<<<<<< SEARCH\n        return self.dropout(self.proj(F.gelu(self.fc(x))))\n=======\n"
              "        return self.dropout(self.proj(F.relu(self.fc(x)).square()))\n>>>>>>> REPLACE\n")
    mutation = from_search_replace(BASE, answer)
    assert [e.target for e in mutation.edits] == ["MLP.forward"]
    with pytest.raises(ApplyError, match="SEARCH block 1 not found"):
        from_search_replace(BASE, answer.replace("F.gelu", "F.tanh"))
    with pytest.raises(ApplyError, match="found 6 times; include more context"):
        from_search_replace(BASE, "<<<<<<< SEARCH\nimport\n=======\nimport\n>>>>>>> REPLACE\n")


def test_node_edits_without_hashes_are_filled_in_and_checked():
    edits = [{"target": "MLP.forward", "action": "replace",
              "code": "def forward(self, x):\n    return self.proj(F.relu(self.fc(x)).square())"}]
    mutation = from_node_edits(BASE, edits)
    assert mutation.edits[0].base_hash and "F.relu" in apply_mutation(BASE, mutation)
    with pytest.raises(ApplyError, match="did you mean MLP.forward"):
        from_node_edits(BASE, [{**edits[0], "target": "MLP.forwrd"}])
