"""Writes into the real home, the runner's working folder, evotrain's own trainer/ package and
the cached dataset, at paths the attacker has found."""
import os
import uuid
from pathlib import Path

import trainer
from tests.adversarial.harness import attack_source, namespaces_or_skip, run

WRITE = """
for path in {paths!r}:
    try:
        with open(path, "w") as f:
            f.write("written by a variant")
        print("wrote", path, flush=True)
    except OSError:
        pass
"""


def test_a_variant_writes_nowhere_but_its_scratch(spec):
    namespaces_or_skip()
    name = f"redteam-{uuid.uuid4().hex}"
    targets = [Path.home() / name, Path.cwd() / name, Path(trainer.__file__).parent / f"{name}.py",
               Path(spec.dataset_root) / name]
    try:
        run(attack_source(before_finish=WRITE.format(paths=[str(p) for p in targets])), spec)
        assert [p for p in targets if p.exists()] == []
    finally:
        for path in targets:
            if path.exists():
                os.remove(path)
