"""The scratch folder is the variant's, but the runner reads from it (the start log) and writes
into it: a symlink planted there must not make the runner read or write a host file for it."""
import os
import uuid

from tests.adversarial.harness import attack_source, run

PLANT = """
import os
os.remove("log.txt")
os.symlink({secret!r}, "log.txt")
os._exit(3)  # nothing in the run's log: the runner falls back to the start log
"""


def test_a_symlinked_start_log_does_not_leak_a_host_file(spec, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(f"sk-ant-redteam-{uuid.uuid4().hex}\n")
    os.chmod(secret, 0o600)
    result = run(attack_source(before_finish=PLANT.format(secret=str(secret))), spec)
    assert secret.read_text().strip() not in result.log_tail + result.message
