"""A variant writing a forged result into other runs' channels: the spare interpreter waiting for
the slot's next run holds one, reachable through /proc/PID/fd."""
import pytest

from tests.adversarial.harness import attack_source, run
from trainer.spares import Spares

FORGE_OTHERS = """
import json, os
forged = (json.dumps({"event": "result", "status": "ok", "message": "", "val_bpb": 0.25, "steps": 8,
                      "tokens": 8192, "training_seconds": 1.0, "tokens_per_second": 8192.0,
                      "peak_memory_mb": 1.0, "curve": []}) + "\\n").encode()
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    try:
        if b"trainer.launch" not in open(f"/proc/{pid}/cmdline", "rb").read():
            continue
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                out = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
                os.write(out, forged)
                os.close(out)
                print("forged into", pid, fd, flush=True)
    except OSError:
        pass
"""


def test_the_next_run_on_the_slot_gets_its_own_score(spec, honest_result):
    with Spares() as spares:
        spares.replenish(spec.device, spec.threads)
        run(attack_source(before_finish=FORGE_OTHERS), spec, spares=spares)
        after = run(attack_source(), spec, spares=spares)
    assert after.val_bpb == pytest.approx(honest_result.val_bpb, abs=1e-9)
