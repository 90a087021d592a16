"""Look-ahead only in calls shaped unlike the causality check's (it used 2 rows)."""
from tests.adversarial.harness import NEXT_TOKEN, assert_refused_or_no_gain, attack_source, run

ATTACK = attack_source(eval_logits=NEXT_TOKEN + """
if idx.shape[0] != 2:
    logits = logits + oracle
""")


def test_lookahead_in_calls_shaped_unlike_the_check_is_refused(spec, honest_result):
    assert_refused_or_no_gain(run(ATTACK, spec), honest_result)
