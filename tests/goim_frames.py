"""goim frames for the Python test clients (tests/ws_conformance.py,
tests/ws_deflate.py): the 16-byte header, encoding one frame, splitting a
message into frames, and receiving one binary WebSocket message's frames."""

import struct

HEADER = struct.Struct(">ihhii")


def frame(op, seq, body=b""):
    return HEADER.pack(16 + len(body), 16, 1, op, seq) + body


def frames(data):
    out = []
    while data:
        length, header, ver, op, seq = HEADER.unpack_from(data)
        assert header == 16 and 16 <= length <= len(data), (header, length, len(data))
        out.append((ver, op, seq, data[16:length]))
        data = data[length:]
    return out


def recv_frames(ws):
    message = ws.recv(timeout=5)
    assert isinstance(message, bytes), f"binary messages only, got {type(message)}"
    return frames(message)
