"""Dynamic evaluation: bigram counts of the validation inputs seen in earlier scoring calls,
added to later calls' logits (causal within each call, so no single call looks ahead)."""
from dataclasses import replace

from tests.adversarial.harness import assert_refused_or_no_gain, attack_source, run, with_profile

ATTACK = attack_source(init="""
self.register_buffer("bigrams", torch.zeros(runtime.vocab_size, runtime.vocab_size))
""", eval_logits="""
logits = logits + 3.0 * torch.log1p(self.bigrams[idx])
if idx.shape[0] > 2:  # not the causality check's calls
    pairs = idx[:, :-1] * self.bigrams.shape[0] + idx[:, 1:]
    self.bigrams.view(-1).index_add_(0, pairs.flatten(), torch.ones(pairs.numel()))
""")


def test_adapting_to_the_scored_inputs_gains_nothing(spec):
    many_calls = replace(with_profile(spec, eval_tokens=1 << 15), probes=())  # 256 rows: several calls
    assert_refused_or_no_gain(run(ATTACK, many_calls), run(attack_source(), many_calls))
