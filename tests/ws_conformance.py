"""Conformance of corecast's WebSocket port against an independent client
library (Python `websockets`): upgrade, binary messages carrying goim
frames, a fragmented message, ping/pong, op-9 push batches, close handshake.

Usage: python3 tests/ws_conformance.py ws://HOST:PORT/sub http://HOST:PORT [CA_FILE]
(with wss:// and the CA file that signed the server's certificate for WSS).
Prints "conformance ok" and exits 0 when every check holds.
"""

import json
import ssl
import sys
import urllib.request

from goim_frames import frame, frames, recv_frames
from websockets.sync.client import connect

def push_room(http, body):
    request = urllib.request.Request(f"{http}/goim/push/room?operation=1000&type=live&room=77", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert json.loads(reply.read()) == {"code": 0, "message": ""}


def main(ws_url, http, ca_file=None):
    tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
    # No extensions: goim negotiates none, and neither may the server.
    with connect(ws_url, compression=None, open_timeout=5, ssl=tls) as ws:
        assert ws.response.status_code == 101
        token = json.dumps({"mid": 77, "key": "py-conformance", "room_id": "live://77", "platform": "web", "accepts": [1000]})
        ws.send(frame(7, 1, token.encode()))
        assert recv_frames(ws) == [(1, 8, 1, b"")], "auth reply"

        # A fragmented message (the library sends the parts as continuation frames).
        heartbeat = frame(2, 2)
        ws.send([heartbeat[:5], heartbeat[5:11], heartbeat[11:]])
        [(ver, op, seq, body)] = recv_frames(ws)
        assert (ver, op, seq) == (1, 3, 2) and len(body) == 4, "heartbeat reply"

        # Ping / pong.
        assert ws.ping(b"conformance").wait(5), "pong"

        # A room push arrives as one op-9 frame holding the pushed frame.
        push_room(http, b"hello from python")
        [(ver, op, seq, body)] = recv_frames(ws)
        assert op == 9, f"push wrapped in op 9, got op {op}"
        assert frames(body) == [(1, 1000, 0, b"hello from python")]

        # A large message (just under the 4096-byte body limit) round-trips.
        ws.send(frame(50, 9, b"x" * 4000))
        assert recv_frames(ws) == [(1, 50, 9, b"")], "other ops are answered with the same op"

        ws.close()
        assert ws.close_code == 1000, f"clean close, got {ws.close_code}"
    print("conformance ok")


if __name__ == "__main__":
    main(*sys.argv[1:4])
