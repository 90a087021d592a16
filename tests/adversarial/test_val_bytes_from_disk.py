"""The validation bytes read from disk: the dataset folder named in the runtime's spec, the cache
locations, or the path itself (as if the attacker had found it), then remembered by the model."""
from tests.adversarial.harness import (CONTEXT_KEY, MEMORY, RECALL, REMEMBER_STOLEN, assert_refused_or_no_gain,
                                       attack_source, namespaces_or_skip, run)

STEAL = """
import os
import numpy as np
folders = [{known!r}, os.environ.get("EVOTRAIN_CACHE", ""), os.path.expanduser("~/.cache/evotrain")]
try:
    folders.append(getattr(__import__("trainer.run" + "time", fromlist=["x"]), "_sess" + "ion").spec.dataset_root)
except Exception:
    pass
stolen = None
for folder in folders:
    for path in (os.path.join(folder, "val.bin"), *(os.path.join(d, "val.bin") for d, _, _ in os.walk(folder or "/nonexistent"))):
        if stolen is None and os.path.exists(path):
            stolen = torch.from_numpy(np.fromfile(path, dtype=np.uint8).astype(np.int64))
"""


def test_validation_bytes_on_disk_are_out_of_reach(spec, honest_result):
    namespaces_or_skip()
    attack = attack_source(prelude=CONTEXT_KEY, init=MEMORY, eval_logits=RECALL,
                           before_finish=STEAL.format(known=spec.dataset_root) + REMEMBER_STOLEN)
    result = run(attack, spec)
    assert "stole" not in result.log_tail
    assert_refused_or_no_gain(result, honest_result)
