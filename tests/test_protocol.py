"""Frames between the runner and its sandboxed processes: sizes capped, garbage refused, descriptors passed."""
from __future__ import annotations

import math
import os
import socket
import struct

import pytest

from trainer import protocol


@pytest.fixture
def pair():
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


def test_a_frame_carries_a_header_a_payload_and_descriptors(pair, tmp_path):
    left, right = pair
    with open(tmp_path / "log", "wb") as log:
        protocol.send(left, {"type": "job", "n": 3}, b"\x00\x01\x02", fds=[log.fileno()])
    header, payload, fds = protocol.recv(right, max_payload=3, max_fds=1)
    assert header == {"type": "job", "n": 3} and payload == b"\x00\x01\x02" and len(fds) == 1
    os.write(fds[0], b"through the passed descriptor")
    os.close(fds[0])
    assert (tmp_path / "log").read_bytes() == b"through the passed descriptor"


def test_an_oversized_frame_is_refused_before_it_is_read(pair):
    left, right = pair
    left.sendall(struct.pack("!II", 10, 1 << 31))
    with pytest.raises(protocol.ProtocolError, match="over the limits"):
        protocol.recv(right, max_payload=1 << 20)


@pytest.mark.parametrize("header", [b"not json", b"[1, 2]"])
def test_a_header_that_is_not_a_json_object_is_refused(pair, header):
    left, right = pair
    left.sendall(struct.pack("!II", len(header), 0) + header)
    with pytest.raises(protocol.ProtocolError):
        protocol.recv(right, max_payload=0)


def test_a_closed_connection_is_an_end_between_frames_and_an_error_within_one(pair):
    left, right = pair
    left.sendall(struct.pack("!II", 100, 0) + b'{"ty')
    left.close()
    with pytest.raises(protocol.ProtocolError, match="in the middle of a frame"):
        protocol.recv(right, max_payload=0)
    with pytest.raises(EOFError):
        protocol.recv(right, max_payload=0)


@pytest.mark.parametrize("value, number", [(1.5, 1.5), (2, 2.0), ("inf", float("inf")), (True, None), ("3", None),
                                           (None, None)])
def test_reported_numbers_are_json_numbers_or_the_names_of_non_finite_ones(value, number):
    assert protocol.reported_number(value) == number
    assert math.isnan(protocol.reported_number("nan"))
