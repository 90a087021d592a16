"""Framed messages between the runner and its sandboxed processes: a JSON header, then raw bytes.

A frame is 8 bytes (`!II`: header length, payload length), the header as UTF-8 JSON (always an
object), then the payload. Everything travels over a Unix socketpair the runner creates: a socket,
unlike a pipe, cannot be reopened through /proc/PID/fd by another process, so no run can write into
another run's connection. The runner reads frames from processes that run untrusted code, so
every size is capped and anything malformed is a ProtocolError naming what was wrong.
"""
from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Sequence

_PREFIX = struct.Struct("!II")
MODEL_FILE = "model.bin"  # the exported model's tensors, left in the training process's scratch folder
MAX_HEADER_BYTES = 1 << 24  # an exported model's description: ~130 bytes per operator call


class ProtocolError(Exception):
    """The other side sent something that is not a frame of this protocol."""


def send(sock: socket.socket, header: dict, payload: bytes | memoryview = b"", fds: Sequence[int] = ()) -> None:
    """One frame; `fds` travel with it as SCM_RIGHTS (the receiver gets its own copies)."""
    encoded = json.dumps(header).encode()
    prefix = _PREFIX.pack(len(encoded), len(payload))
    if fds:
        socket.send_fds(sock, [prefix], list(fds))
        sock.sendall(encoded)
    else:
        sock.sendall(prefix + encoded)
    if len(payload):
        sock.sendall(payload)


def recv(sock: socket.socket, max_payload: int, max_fds: int = 0) -> tuple[dict, bytes, list[int]]:
    """The next frame: (header, payload, received descriptors). EOFError when the peer closed
    cleanly between frames; ProtocolError for a truncated, oversized or unreadable frame."""
    prefix, fds = _read_prefix(sock, max_fds)
    header_size, payload_size = _PREFIX.unpack(prefix)
    if header_size > MAX_HEADER_BYTES or payload_size > max_payload:
        _close_all(fds)
        raise ProtocolError(f"a frame of {header_size} + {payload_size} bytes is over the limits "
                            f"({MAX_HEADER_BYTES} + {max_payload})")
    try:
        header = json.loads(_read_exactly(sock, header_size))
    except (UnicodeDecodeError, ValueError) as error:
        _close_all(fds)
        raise ProtocolError(f"a frame header is not JSON: {error}") from None
    if not isinstance(header, dict):
        _close_all(fds)
        raise ProtocolError(f"a frame header must be a JSON object, not {type(header).__name__}")
    return header, _read_exactly(sock, payload_size), fds


def _read_prefix(sock: socket.socket, max_fds: int) -> tuple[bytes, list[int]]:
    if max_fds:
        data, fds, _, _ = socket.recv_fds(sock, _PREFIX.size, max_fds)
    else:
        data, fds = sock.recv(_PREFIX.size), []
    if not data:
        raise EOFError("the connection was closed")
    return data + _read_exactly(sock, _PREFIX.size - len(data)), list(fds)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        count = sock.recv_into(view[got:])
        if count == 0:
            raise ProtocolError(f"the connection closed in the middle of a frame ({got} of {size} bytes)")
        got += count
    return bytes(buffer)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def reported_number(value: object) -> float | None:
    """A number the sandboxed side reported, or None; JSON has no NaN or infinity, so those come as
    the strings "nan", "inf" and "-inf"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return float(value) if value in ("nan", "inf", "-inf") else None
