"""Each row's last position reads the next row's first token: the target, when validation rows
are contiguous windows (the check compared only the first half of each row)."""
from tests.adversarial.harness import assert_refused_or_no_gain, attack_source, run

ATTACK = attack_source(eval_logits="""
following = torch.roll(idx[:, 0], -1)
last = F.one_hot(following, logits.shape[-1]).to(logits.dtype) * 10.0
logits = torch.cat([logits[:, :-1], logits[:, -1:] + last[:, None]], dim=1)
""")


def test_reading_the_next_rows_first_token_gains_nothing(spec, honest_result):
    assert_refused_or_no_gain(run(ATTACK, spec), honest_result)
