"""Plain model code that remembers what followed each 6-token context in every row it is shown
in eval mode (the probes showed the first validation rows, which were also the first scored)."""
from tests.adversarial.harness import (CONTEXT_KEY, MEMORY, RECALL, assert_refused_or_no_gain, attack_source,
                                       run)

ATTACK = attack_source(prelude=CONTEXT_KEY, init=MEMORY, eval_logits=RECALL + """
self.memory[context_key(idx)[:, :-1].flatten()] = idx[:, 1:].flatten()
""")


def test_remembering_the_rows_it_is_shown_gains_nothing(spec, honest_result):
    assert_refused_or_no_gain(run(ATTACK, spec), honest_result)
