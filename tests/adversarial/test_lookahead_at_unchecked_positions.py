"""Look-ahead only at positions the check does not compare (it cut every row at its middle)."""
from tests.adversarial.harness import NEXT_TOKEN, assert_refused_or_no_gain, attack_source, run

ATTACK = attack_source(eval_logits=NEXT_TOKEN + """
early = (torch.arange(idx.shape[1]) < idx.shape[1] // 2 - 1).to(logits.dtype)
logits = logits + oracle * early[None, :, None]
""")


def test_lookahead_before_the_middle_of_each_row_is_refused(spec, honest_result):
    assert_refused_or_no_gain(run(ATTACK, spec), honest_result)
