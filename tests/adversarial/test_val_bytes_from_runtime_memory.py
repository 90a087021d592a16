"""The validation rows read from the runtime's own memory (every int64 tensor of full rows)."""
from tests.adversarial.harness import (CONTEXT_KEY, MEMORY, RECALL, REMEMBER_STOLEN, assert_refused_or_no_gain,
                                       attack_source, run)

STEAL = """
import gc
stolen = None
for obj in gc.get_objects():
    try:
        if (isinstance(obj, torch.Tensor) and obj.dtype == torch.int64 and obj.dim() == 2
                and obj.shape[1] == runtime.seq_len and obj.shape[0] > 8):  # not a training batch of 8 rows
            if stolen is None or obj.numel() > stolen.numel():
                stolen = obj.flatten()
    except Exception:
        pass
"""


def test_validation_rows_are_not_in_the_variants_memory(spec, honest_result):
    attack = attack_source(prelude=CONTEXT_KEY, init=MEMORY, eval_logits=RECALL, before_finish=STEAL + REMEMBER_STOLEN)
    result = run(attack, spec)
    assert "stole" not in result.log_tail
    assert_refused_or_no_gain(result, honest_result)
