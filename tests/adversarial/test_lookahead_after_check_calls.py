"""Look-ahead only after the causality check's calls: the first calls after training are honest."""
from tests.adversarial.harness import NEXT_TOKEN, assert_refused_or_no_gain, attack_source, run

ATTACK = attack_source(init="self.calls = 0", on_forward="""
if self.training:
    self.calls = 0
""", eval_logits=NEXT_TOKEN + """
self.calls += 1
if self.calls > 3:
    logits = logits + oracle
""")


def test_lookahead_after_the_checks_calls_is_refused(spec, honest_result):
    assert_refused_or_no_gain(run(ATTACK, spec), honest_result)
