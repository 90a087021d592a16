"""The API key read from an ancestor's environment: the search process that started the run
holds it in /proc/PID/environ, even though the variant's own environment is scrubbed."""
import json
import os
import subprocess
import sys
import uuid

from tests.adversarial.harness import attack_source, namespaces_or_skip

READ_ENVIRONS = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        for entry in open(f"/proc/{pid}/environ", "rb").read().split(b"\\0"):
            if entry.startswith(b"ANTHROPIC_API_KEY="):
                print("FOUND", pid, entry.decode(), flush=True)
    except OSError:
        pass
"""
DRIVER = """
import json, sys
from dataclasses import replace
from trainer.runner import build_spec, run_variant
spec = build_spec("4k", device="cpu", threads=1)
spec = replace(spec, profile=replace(spec.profile, eval_tokens=4096, probe_rows=4))
result = run_variant(sys.stdin.read(), spec, timeout_s=180)
print(json.dumps({"status": result.status.value, "log": result.log_tail}))
"""


def test_no_ancestor_environment_is_readable(tmp_path):
    namespaces_or_skip()
    secret = f"sk-ant-redteam-{uuid.uuid4().hex}"
    env = {**os.environ, "ANTHROPIC_API_KEY": secret}
    driver = subprocess.run([sys.executable, "-c", DRIVER], input=attack_source(before_finish=READ_ENVIRONS),
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert driver.returncode == 0, driver.stderr[-2000:]
    report = json.loads(driver.stdout.splitlines()[-1])
    assert secret not in report["log"] and secret not in driver.stdout
