"""A forged result written into the result channel before finish: through the runtime's own
channel object (reached by obfuscated access) and into every inherited descriptor."""
from tests.adversarial.harness import assert_refused_or_no_gain, attack_source, run

FORGE = """
import json, os
forged = {"event": "result", "status": "ok", "message": "", "val_bpb": 0.01, "steps": 8, "tokens": 8192,
          "training_seconds": 1.0, "tokens_per_second": 8192.0, "peak_memory_mb": 1.0, "curve": []}
try:
    session = getattr(__import__("trainer.run" + "time", fromlist=["x"]), "_sess" + "ion")
    session._channel.send(forged)
except Exception:
    pass
for fd in range(3, 64):
    try:
        os.write(fd, (json.dumps(forged) + "\\n").encode())
    except OSError:
        pass
"""


def test_a_forged_result_is_not_the_score(spec, honest_result):
    assert_refused_or_no_gain(run(attack_source(before_finish=FORGE), spec), honest_result)
