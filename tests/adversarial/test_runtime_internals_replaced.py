"""The runtime's scoring replaced through obfuscated module access: every trainer module's
bits_per_byte returns 0.01 and its leak check finds nothing."""
from tests.adversarial.harness import assert_refused_or_no_gain, attack_source, run

PATCH = """
import sys
modules = getattr(sys, "mod" + "ules")
for name in list(modules):
    if name.startswith("tra" + "iner"):
        for attribute, fake in (("bits_per_byte", lambda *a, **k: 0.01), ("find_leak", lambda *a, **k: None)):
            if hasattr(modules[name], attribute):
                setattr(modules[name], attribute, fake)
"""


def test_patching_the_runtimes_scoring_gains_nothing(spec, honest_result):
    assert_refused_or_no_gain(run(attack_source(before_finish=PATCH), spec), honest_result)
