"""A variant that can see (and so signal, or read the memory of) the runner and other processes."""
import os

from tests.adversarial.harness import attack_source, namespaces_or_skip, run

SIGNAL = """
import os
try:
    os.kill({pid}, 0)  # 0 only asks whether the process is there and may be signalled
    print("can signal the runner", flush=True)
except OSError:
    pass
print("sees", sum(name.isdigit() for name in os.listdir("/proc")), "processes", flush=True)
"""


def test_the_runner_is_out_of_the_variants_sight(spec):
    namespaces_or_skip()
    result = run(attack_source(before_finish=SIGNAL.format(pid=os.getpid())), spec)
    assert "can signal the runner" not in result.log_tail
