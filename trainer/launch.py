"""`python -m trainer.launch ROLE DEVICE FD [VIEW]`: the trusted entry point of every sandboxed process.

Before anything untrusted runs, it enters its namespaces and file-system view (VIEW, see
trainer/isolation.py), imports torch and readies the device, says `ready` on its socket (FD) and
waits for its job: a spare interpreter (trainer/spares.py) waits there for its run. The job
brings the run's log file, which from then on takes what the process prints. Then, by ROLE:

- `train`: installs the runtime session and runs train.py as __main__; whatever ends the script
  (an exception, an exit, a missing finish) becomes a status sent on the socket;
- `score`: scores an exported model (trainer/scorer.py); no variant code runs in it;
- `compat`: runs a script that prints its own score, as it is (trainer/compat.py).

A driver that dies leaves the socket closed: a waiting process reads the end and exits.
"""
from __future__ import annotations

import os
import runpy
import socket
import sys
import traceback

_ROLES = ("train", "score", "compat")


def _prepare(device: str, role: str) -> None:
    """What every run on `device` pays before its first batch (or the scorer before its first call), done
    before the job arrives: torch.optim imports torch._dynamo (1.5 s on CPU), the first torch.export
    another second; CUDA needs its context and compiler. (The scorer leaves out torch._dynamo, which
    it needs only to count FLOPs for a FLOP budget: 0.9 s of CPU per evaluation otherwise.)"""
    import torch

    if role == "train":
        import torch._dynamo  # noqa: F401

        from trainer.graph import export_model

        export_model(torch.nn.Linear(2, 2), torch.zeros(1, 2))  # loads the exporter's lazy modules
    if device.startswith("cuda") and torch.cuda.is_available():
        if role == "train":
            import torch._inductor.compile_fx  # noqa: F401
        torch.zeros(1, device=device)


def _take_output(log_fd: int) -> None:
    """From now on stdout and stderr go to the run's log, after what this process printed so far."""
    from trainer.sandbox import START_LOG  # in the working directory: the runner started us there

    sys.stdout.flush()
    sys.stderr.flush()
    if os.path.exists(START_LOG):
        with open(START_LOG, "rb") as so_far:
            os.write(log_fd, so_far.read())
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def _train(connection: socket.socket, job: dict) -> int:
    from trainer import protocol, runtime
    from trainer.evaluation import RunFailure, one_line, status_of
    from trainer.result import Status
    from trainer.session import TrainingSession

    session = None
    try:
        session = TrainingSession(job["session"], connection)
        runtime._install(session)
        sys.path.insert(0, os.getcwd())  # its own modules (model.py) import as they would beside it
        sys.argv = ["train.py"]
        runpy.run_path("train.py", run_name="__main__")
    except RunFailure as failure:
        if session is None:
            protocol.send(connection, {"type": "error", "status": failure.status.value, "message": str(failure)})
        print(f"evotrain: {failure.status.value}: {failure}", file=sys.stderr)
        return 1
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            session.report(Status.CRASH, f"exited with code {exit_.code}")
            return 1
    except BaseException as error:  # noqa: BLE001 - every way a variant can die becomes a status
        traceback.print_exc()
        if session is not None:
            session.report(status_of(error), one_line(error))
        return 1
    if not session.finished:
        session.report(Status.INVALID, "the script ended without calling runtime.finish(model)")
        return 1
    return 0


def main() -> int:
    role, device, fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if role not in _ROLES:
        raise SystemExit(f"unknown role {role!r}: one of {', '.join(_ROLES)}")
    if len(sys.argv) > 4:
        from trainer import isolation

        isolation.enter(isolation.View.from_json(sys.argv[4]))
        isolation.become_init(fd)
    from trainer import protocol

    connection = socket.socket(fileno=fd)
    _prepare(device, role)
    protocol.send(connection, {"type": "ready"})
    try:
        job, _, fds = protocol.recv(connection, max_payload=0, max_fds=2)
    except (EOFError, ConnectionError):
        return 0  # a spare whose runner went away before giving it a run
    if fds:
        _take_output(fds[0])
    if role == "score":
        from trainer.scorer import serve

        return serve(connection, job, fds[1], device)
    if role == "compat":
        sys.path.insert(0, os.getcwd())  # its neighbours (prepare.py) import as they would beside it
        sys.argv = ["train.py"]
        runpy.run_path("train.py", run_name="__main__")
        return 0
    return _train(connection, job)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the job is done: skip tearing down torch and whatever the script left running
