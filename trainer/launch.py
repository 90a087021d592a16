"""`python -m trainer.launch train.py`: the trusted entry point of every evaluation subprocess.

Reads the spec from stdin, installs the runtime session, runs the script as __main__,
and turns whatever ends it (an exception, an exit, a missing finish) into a status on
the result channel. The traceback goes to the log, for feedback to mutators.
"""
from __future__ import annotations

import os
import runpy
import sys
import time
import traceback

_LAUNCHED = time.perf_counter()  # before torch is imported: start-up cost is part of the overhead

from trainer.result import Status


def _status_of(error: BaseException) -> Status:
    import torch

    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return Status.OOM
    text = str(error)
    if isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text):
        return Status.OOM  # the CPU allocator's words under the address-space limit
    return Status.CRASH


def _one_line(error: BaseException) -> str:
    detail = str(error).strip().splitlines()
    return f"{type(error).__name__}: {detail[0] if detail else ''}".strip()[:300]


def main() -> int:
    from trainer import runtime
    from trainer.channel import Channel
    from trainer.evaluation import RunFailure
    from trainer.session import TrainingSession
    from trainer.spec import RunSpec

    spec = RunSpec.from_json(sys.stdin.read())
    sys.stdin = open(os.devnull)
    channel = Channel(spec.channel_fd)
    script = sys.argv[1]
    try:
        session = TrainingSession(spec, channel, launched=_LAUNCHED)
        runtime._install(session)
        sys.argv = [script]
        runpy.run_path(script, run_name="__main__")
    except RunFailure as failure:
        if not runtime._session or not runtime._session.finished:
            channel.send({"event": "error", "status": failure.status.value, "message": str(failure)})
        print(f"evotrain: {failure.status.value}: {failure}", file=sys.stderr)
        return 1
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            channel.send({"event": "error", "status": Status.CRASH.value, "message": f"exited with code {exit_.code}"})
            return 1
    except BaseException as error:  # noqa: BLE001 - every way a variant can die becomes a status
        traceback.print_exc()
        channel.send({"event": "error", "status": _status_of(error).value, "message": _one_line(error)})
        return 1
    if not runtime._session.finished:
        channel.send({"event": "error", "status": Status.INVALID.value,
                      "message": "the script ended without calling runtime.finish(model)"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
