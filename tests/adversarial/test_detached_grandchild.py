"""A detached grandchild (double fork, new session) that outlives the run and the memory watch."""
import uuid

import psutil

from tests.adversarial.harness import attack_source, namespaces_or_skip, run

DETACH = """
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {marker!r}])
    os._exit(0)
os.wait()
"""


def marked(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in (process.info["cmdline"] or []):
            found.append(process)
    return found


def test_nothing_the_variant_started_outlives_the_run(spec):
    namespaces_or_skip()
    marker = f"redteam-{uuid.uuid4().hex}"
    try:
        run(attack_source(before_finish=DETACH.format(marker=marker)), spec)
        _, alive = psutil.wait_procs(marked(marker), timeout=30)  # a kill takes effect a moment later
        assert not alive
    finally:
        for process in marked(marker):
            process.kill()
