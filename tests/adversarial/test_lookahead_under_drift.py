"""Look-ahead hidden under random drift, which inflated the check's tolerance (10x the noise)."""
from tests.adversarial.harness import NEXT_TOKEN, assert_refused_or_no_gain, attack_source, run

ATTACK = attack_source(eval_logits=NEXT_TOKEN + """
logits = logits + oracle + 1.5 * torch.randn_like(logits)
""")


def test_lookahead_under_drift_is_refused(spec, honest_result):
    assert_refused_or_no_gain(run(ATTACK, spec), honest_result)
