"""`python -m trainer.launch train.py [device]`: the trusted entry point of every evaluation subprocess.

Imports torch and gets the device ready, then reads the spec from stdin (a spare interpreter,
trainer/spares.py, waits there for its run), installs the runtime session, runs the script as
__main__, and turns whatever ends it (an exception, an exit, a missing finish) into a status
on the result channel. The traceback goes to the log, for feedback to mutators.
"""
from __future__ import annotations

import os
import runpy
import select
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


def _prepare(device: str) -> None:
    """What every run on `device` pays before its first batch, done before the spec arrives:
    torch.optim imports torch._dynamo (1.5 s on CPU); CUDA needs its context and compiler."""
    import torch
    import torch._dynamo  # noqa: F401

    if device.startswith("cuda") and torch.cuda.is_available():
        import torch._inductor.compile_fx  # noqa: F401

        torch.zeros(1, device=device)


def _move_output(log_path: str) -> None:
    """From now on stdout and stderr go to the run's log, after what this process printed so far."""
    sys.stdout.flush()
    sys.stderr.flush()
    from trainer.sandbox import START_LOG  # in the working directory: the runner started us with it

    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    if os.path.exists(START_LOG):
        with open(START_LOG, "rb") as so_far:
            os.write(fd, so_far.read())
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main() -> int:
    from trainer import runtime
    from trainer.channel import Channel
    from trainer.evaluation import RunFailure
    from trainer.session import TrainingSession
    from trainer.spec import RunSpec

    script = sys.argv[1]
    _prepare(sys.argv[2] if len(sys.argv) > 2 else "cpu")
    spec_was_waiting = bool(select.select([sys.stdin], [], [], 0)[0])
    text = sys.stdin.read()
    if not text:
        return 0  # a spare whose runner went away before giving it a run
    # start-up: from the process start, or for a spare that waited, from the spec's arrival
    launched = _LAUNCHED if spec_was_waiting else time.perf_counter()
    spec = RunSpec.from_json(text)
    sys.stdin = open(os.devnull)
    if spec.log_path:
        _move_output(spec.log_path)
    channel = Channel(spec.channel_fd)
    try:
        session = TrainingSession(spec, channel, launched=launched)
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
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the result is sent: skip tearing down torch and whatever the script left running
