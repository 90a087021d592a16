"""Probes computed in the sandbox are the variant's word: reporting perfect ones (to escape early
stopping) must not touch its score, which the scorer computes."""
from tests.adversarial.harness import assert_refused_or_no_gain, attack_source, run

LIE = """
import trainer.session as session_module
session_module.bits_per_byte = lambda *args, **kwargs: 0.001
"""


def test_lying_about_the_probes_gains_nothing(spec, honest_result):
    result = run(attack_source(prelude=LIE), spec)
    assert all(point.val_bpb == 0.001 for point in result.curve)  # the lie reached the probes, as designed
    assert_refused_or_no_gain(result, honest_result)
