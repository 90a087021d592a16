"""One training run as the sandboxed runtime sees it: a client of the runner's batch server.

Nothing here is a boundary: this code runs in the variant's own process, which can change any of
it. It is the convenient, honest way to follow the contract. The runner outside decides what
counts (trainer/batch_server.py: batches, tokens, time, the budget) and the trusted scorer what
the model scores (trainer/scorer.py). The session asks the runner whether to start a step, takes
batches from it, reports each step's loss, runs the probes the runner asks for on the held-out
training rows it sends, and in `finish` exports the model for scoring. Any breach the runner
reports ends the run there, so a script that catches the exception gains nothing.
"""
from __future__ import annotations

import math
import platform
import socket
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from trainer import protocol
from trainer.budget import Budget
from trainer.evaluation import RunFailure, bits_per_byte
from trainer.graph import GraphError, export_model
from trainer.result import Status

_MAX_REPLY_BYTES = 1 << 31


class TrainingSession:
    def __init__(self, config: dict, connection: socket.socket) -> None:
        self._connection = connection
        self.device = torch.device(config["device"])
        if self.device.type == "cuda" and not torch.cuda.is_available():
            self._fail(Status.INVALID, f"device {config['device']} requested but CUDA is not available")
        self.dtype = getattr(torch, config["dtype"])
        self.seed = config["seed"]
        self.seq_len = config["seq_len"]
        self.vocab_size = config["vocab_size"]
        self.budget = Budget.from_dict(config["budget"])
        self._export_rows = config["export_rows"]
        self._token_bytes = torch.tensor(config["token_bytes"], dtype=torch.int64)
        if config["threads"]:
            torch.set_num_threads(config["threads"])
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        self._progress = 0.0
        self._steps = 0
        self._declared = False
        self._failed = False
        self._finished = False
        self._send({"type": "start", "device": str(self.device), "dtype": config["dtype"], "torch": torch.__version__,
                    "python": platform.python_version(), "vocab_size": self.vocab_size, "seq_len": self.seq_len,
                    "threads": torch.get_num_threads()})

    # ---------------------------------------------------------------- the contract
    def progress(self) -> float:
        """Fraction of the budget spent, as the runner counted it at the last exchange."""
        return self._progress

    def keep_training(self) -> bool:
        self._check_open()
        reply, _ = self._ask({"type": "begin"})
        return bool(reply["go"])

    def next_batch(self, batch_size: int, seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_open()
        seq_len = self.seq_len if seq_len is None else seq_len
        if not (isinstance(batch_size, int) and batch_size > 0 and isinstance(seq_len, int) and 0 < seq_len <= self.seq_len):
            self._fail(Status.INVALID, f"next_batch needs batch_size > 0 and 0 < seq_len <= {self.seq_len}, "
                                       f"but got {batch_size=}, {seq_len=}")
        reply, payload = self._ask({"type": "batch", "rows": batch_size, "seq_len": seq_len})
        window = torch.from_numpy(_rows(reply, payload).astype(np.int64))
        if self.device.type == "cuda":
            window = window.pin_memory().to(self.device, non_blocking=True)
        return window[:, :-1], window[:, 1:]

    def step(self, model: torch.nn.Module, loss: torch.Tensor | float) -> None:
        self._check_open()
        value = float(loss.detach().float().item() if isinstance(loss, torch.Tensor) else loss)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._steps += 1
        report = {"type": "step", "loss": value if math.isfinite(value) else str(value)}
        if not self._declared:  # a FLOP budget is metered by it (and checked by the scorer); else it is informative
            report["flops_per_token"] = self._forward_flops_per_token(model)
            self._declared = True
        reply, payload = self._ask(report)
        if reply.get("probe"):
            self._probe(model, _rows(reply, payload))

    def finish(self, model: torch.nn.Module) -> None:
        self._check_open()
        self._finished = True
        model.eval()
        example = torch.zeros(self._export_rows, self.seq_len, dtype=torch.int64, device=self.device)
        try:
            description, data = export_model(model, example)
        except GraphError as error:
            self._finished = False
            self._fail(Status.INVALID, str(error))
        with open(protocol.MODEL_FILE, "wb") as file:  # the runner passes the file itself on to the scorer
            file.write(data)
        report = {"type": "model", "graph": description, "parameters": sum(p.numel() for p in model.parameters())}
        if self.device.type == "cuda":  # device memory: the runner measures only the host's
            report["peak_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        protocol.send(self._connection, report)

    def autocast(self) -> AbstractContextManager:
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def finished(self) -> bool:
        return self._finished or self._failed

    # ---------------------------------------------------------------- how a run ends
    def report(self, status: Status, message: str) -> None:
        """How the script ended before its model was handed over (raised, exited, never finished)."""
        if not self.finished:
            self._failed = True
            self._send({"type": "error", "status": status.value, "message": message})

    # ---------------------------------------------------------------- internals
    def _probe(self, model: torch.nn.Module, rows: np.ndarray) -> None:
        was_training = model.training
        model.eval()
        window = torch.from_numpy(rows.astype(np.int64))
        try:
            value = bits_per_byte(model, window[:, :-1], window[:, 1:], self._token_bytes, len(window),
                                  self.autocast(), self.device)
        except RunFailure as failure:
            self._fail(failure.status, str(failure))
        model.train(was_training)
        self._ask({"type": "probe", "val_bpb": value if math.isfinite(value) else str(value)})

    def _forward_flops_per_token(self, model: torch.nn.Module) -> float | None:
        """torch's FlopCounterMode on one row of the scoring context (cheap once torch.optim has loaded
        torch._dynamo); None for a model it cannot count (a compiled one, say)."""
        from torch.utils.flop_counter import FlopCounterMode

        was_training = model.training
        model.eval()
        counter = FlopCounterMode(display=False)
        try:
            with torch.no_grad(), counter, self.autocast():
                model(torch.zeros(1, self.seq_len, dtype=torch.int64, device=self.device))
        except Exception:  # noqa: BLE001 - the count is the runtime's courtesy; the scorer checks FLOP budgets
            return None
        finally:
            model.train(was_training)
        return counter.get_total_flops() / self.seq_len

    def _ask(self, request: dict) -> tuple[dict, bytes]:
        self._send(request)
        try:
            reply, payload, _ = protocol.recv(self._connection, _MAX_REPLY_BYTES)
        except (EOFError, OSError, protocol.ProtocolError) as error:
            self._failed = True
            raise RunFailure(Status.CRASH, f"the runner went away: {error}") from None
        if "progress" in reply:
            self._progress = reply["progress"]
        if reply.get("refused"):
            self._failed = True
            raise RunFailure(Status(reply["status"]), reply["message"])
        return reply, payload

    def _check_open(self) -> None:
        if self._failed:
            raise RunFailure(Status.INVALID, "the runtime already stopped this run")
        if self._finished:
            self._fail(Status.INVALID, "the runtime was used after finish(model)")

    def _fail(self, status: Status, message: str) -> None:
        self._failed = True
        self._send({"type": "error", "status": status.value, "message": message})
        raise RunFailure(status, message)

    def _send(self, message: dict) -> None:
        protocol.send(self._connection, message)


def _rows(reply: dict, payload: bytes) -> np.ndarray:
    return np.frombuffer(payload, dtype=reply["dtype"]).reshape(reply["shape"])
