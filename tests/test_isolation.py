"""What a sandboxed variant sees of the machine, the cgroup around it, and the fallback without namespaces."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import psutil
import pytest

import trainer

from tests.conftest import launcher_processes, tiny_script, wait_gone
from trainer import isolation, sandbox
from trainer.cgroups import RunGroup
from trainer.datasets import default_cache_dir
from trainer.errors import UserError
from trainer.result import Status
from trainer.runner import run_variant
from trainer.trust import TrustPolicy, admit

needs_namespaces = pytest.mark.skipif(not isolation.namespaces_available(),
                                      reason="needs user, PID, mount and network namespaces (util-linux unshare)")


def _cgroups_available() -> bool:
    group = RunGroup.create(256, 16)
    if group is not None:
        group.remove()
    return group is not None


needs_cgroups = pytest.mark.skipif(not _cgroups_available(), reason="this machine gives no writable cgroup")

# Reports what the variant can see and do, as one JSON line in its log.
LOOK_AROUND = textwrap.dedent("""
    import json, os, socket
    def readable(path):
        try:
            with open(path, "rb") as f:
                f.read(1)
            return True
        except OSError:
            return False
    def writable(folder):
        try:
            with open(os.path.join(folder, "written-by-a-variant"), "w"):
                pass
            return True
        except OSError:
            return False
    status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2).close()
        network = True
    except OSError:
        network = False
    print("SEEN", json.dumps({
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "capabilities": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
        "root": sorted(os.listdir("/")), "network": network,
        "readable": {p: readable(p) for p in PATHS},
        "writable": {p: writable(p) for p in FOLDERS},
        "environment": sorted(os.environ),
    }), flush=True)
""")


@pytest.fixture(scope="module")
def seen(shakespeare_spec):
    if not isolation.namespaces_available():
        pytest.skip("needs user, PID, mount and network namespaces (util-linux unshare)")
    cache = default_cache_dir()
    paths = [str(Path(shakespeare_spec.dataset_root) / "val.bin"), str(Path.home() / ".bashrc"), "/etc/shadow",
             str(Path(trainer.__file__))]
    folders = [str(Path(trainer.__file__).parent), str(cache), "/usr", "/tmp"]
    source = LOOK_AROUND.replace("PATHS", repr(paths)).replace("FOLDERS", repr(folders)) + tiny_script()
    result = run_variant(source, shakespeare_spec, timeout_s=300)
    assert result.status is Status.OK, result.message + result.log_tail
    assert result.isolation == isolation.NAMESPACES
    line = next(line for line in result.log_tail.splitlines() if line.startswith("SEEN "))
    return json.loads(line.removeprefix("SEEN "))


@needs_namespaces
def test_a_variant_sees_only_its_own_processes(seen):
    assert seen["pids"][0] == 1 and len(seen["pids"]) < 10  # its interpreter is PID 1 of its namespace


@needs_namespaces
def test_a_variant_has_no_privileges_and_no_network(seen):
    assert seen["capabilities"] == "0000000000000000" and seen["no_new_privs"] == "1"
    assert seen["network"] is False


@needs_namespaces
def test_a_variant_reads_code_but_no_data_no_home_and_no_secrets(seen, shakespeare_spec):
    readable = seen["readable"]
    assert readable[str(Path(trainer.__file__))]  # its runtime's code is there, read-only
    assert not readable[str(Path(shakespeare_spec.dataset_root) / "val.bin")]
    assert not readable[str(Path.home() / ".bashrc")] and not readable["/etc/shadow"]
    assert not any(name.endswith(("KEY", "TOKEN", "SECRET")) for name in seen["environment"])


@needs_namespaces
def test_a_variant_writes_only_its_scratch_and_its_private_tmp(seen):
    writable = seen["writable"]
    assert writable == {str(Path(trainer.__file__).parent): False, str(default_cache_dir()): False, "/usr": False,
                        "/tmp": True}


@needs_cgroups
def test_a_run_over_its_memory_limit_is_killed_by_its_cgroup(make_spec):
    source = "from trainer import runtime\nhog = []\nwhile True:\n    hog.append(b'x' * (50 << 20))\n"
    result = run_variant(source, make_spec(), timeout_s=300, memory_mb=700)
    assert result.status is Status.OOM, result.message + result.log_tail


@needs_cgroups
def test_the_cgroup_counts_the_cpu_of_threads_and_children(make_spec):
    burner = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'sum(range(3 * 10**7))'])\n"
    result = run_variant(tiny_script(before_finish=burner), make_spec("4k"), timeout_s=300)
    assert result.status is Status.OK, result.message + result.log_tail
    assert result.cpu_seconds > 0.3, result.extra  # the child's loop is there, though the runtime never saw it


def test_without_namespaces_the_run_falls_back_says_so_once_and_records_it(make_spec, monkeypatch):
    monkeypatch.setattr(isolation, "namespaces_available", lambda: False)
    sandbox.isolation_level.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = run_variant(tiny_script(), make_spec("4k"), timeout_s=300)
            second = run_variant(tiny_script(), make_spec("4k"), timeout_s=300)
        assert first.status is Status.OK and second.status is Status.OK, first.message + first.log_tail
        assert first.isolation == second.isolation == isolation.PROCESS
        assert len([w for w in caught if "namespaces are unavailable" in str(w.message)]) == 1
        with pytest.raises(UserError, match="drop --require-isolation"):
            run_variant(tiny_script(), make_spec("4k"), timeout_s=300, require_isolation=True)
        assert admit(first, TrustPolicy(require_isolation=True)).status is Status.INVALID
        assert admit(first, TrustPolicy()) == first
    finally:
        sandbox.isolation_level.cache_clear()


def test_the_search_refuses_untrusted_results_unless_asked_for_compatibility_mode(make_spec):
    printed = "print('val_bpb:          0.500000')\n"
    result = run_variant(printed, make_spec(), timeout_s=300)
    assert result.status is Status.OK and result.trusted is False and result.val_bpb == 0.5
    refused = admit(result, TrustPolicy())
    assert refused.status is Status.INVALID and refused.val_bpb is None and "--compat" in refused.message
    assert admit(result, TrustPolicy(allow_untrusted=True)) == result


def test_a_script_naming_the_runtime_in_any_way_runs_under_it(make_spec):
    obfuscated = "import importlib\nruntime = importlib.import_module('trainer.' + 'runtime')\nprint('val_bpb: 0.1')\n"
    result = run_variant(obfuscated, make_spec(), timeout_s=300)
    assert result.trusted and result.status is Status.INVALID and "finish" in result.message
    assert os.environ.get("EVOTRAIN_NEVER_SET") is None  # (the runner left the test's environment alone)


HANGS = "from trainer import runtime\nimport time\nprint('HANGING', flush=True)\ntime.sleep(600)\n"
DRIVER = f"""
from trainer.runner import build_spec, run_variant
run_variant({HANGS!r}, build_spec("4k", device="cpu", threads=1), timeout_s=600)
"""


@needs_namespaces
def test_a_run_ends_with_its_runner_even_when_the_runner_is_killed():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER])
    try:
        deadline = time.monotonic() + 300
        while not (training := launcher_processes(psutil.Process(driver.pid), role="train")):
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.1)
        tree = [process for process in psutil.Process(driver.pid).children(recursive=True)]
    finally:
        driver.kill()  # no cleanup of its own: the socket closing is all the sandbox learns
        driver.wait()
    assert training and not wait_gone(tree)
