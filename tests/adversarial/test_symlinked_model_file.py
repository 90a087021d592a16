"""The runner hands the scorer the model file the training process leaves in its scratch folder: a symlink
planted in its place must not make the runner open a host file (which only the runner could see) for it."""
import os
import uuid

from tests.adversarial.harness import attack_source, run

PLANT = """
import builtins, os
_open = builtins.open
def _planting(path, *args, **kwargs):
    if path == "model.bin":
        os.symlink({secret!r}, "model.bin")
        return _open(os.devnull, "wb")
    return _open(path, *args, **kwargs)
builtins.open = _planting
"""


def test_a_symlinked_model_file_is_not_followed(spec, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(f"sk-ant-redteam-{uuid.uuid4().hex}".encode())
    os.chmod(secret, 0o600)
    result = run(attack_source(before_finish=PLANT.format(secret=str(secret))), spec)
    assert result.status.is_failure() and "model.bin" in result.message
