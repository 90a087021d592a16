"""A script that imports the runtime in a way the runner did not recognise ran in compatibility
mode, and its printed score went into the search (which never checked `trusted`)."""
from tests.adversarial.harness import admitted, assert_refused_or_no_gain, run

ATTACK = """
import importlib
runtime = importlib.import_module("trainer." + "runtime")
print("val_bpb:          0.010000")
"""


def test_a_script_cannot_print_its_way_into_the_search(spec, honest_result):
    assert_refused_or_no_gain(admitted(run(ATTACK, spec)), honest_result)
