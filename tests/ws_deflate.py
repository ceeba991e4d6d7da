"""permessage-deflate against an independent client library (Python
`websockets`, compression on, as browsers have it): the extension is
negotiated, a pushed JSON message arrives whole, and the client's own
messages, which the library compresses, are inflated by the server.

Usage: python3 tests/ws_deflate.py ws://HOST:PORT/sub http://HOST:PORT [CA_FILE]
Prints "deflate ok" and exits 0 when every check holds.
"""

import json
import ssl
import sys
import urllib.request

from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from goim_frames import frame, frames, recv_frames
from websockets.sync.client import connect

def main(ws_url, http, ca_file=None):
    tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
    # The library's default offer, with no size threshold on the client's
    # side, so that even the small goim frames it sends go compressed.
    factory = ClientPerMessageDeflateFactory(client_max_window_bits=True, compress_settings={"memLevel": 5})
    with connect(ws_url, extensions=[factory], compression=None, open_timeout=5, ssl=tls, max_size=2**20) as ws:
        answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert answer == "permessage-deflate; server_no_context_takeover; client_no_context_takeover", answer
        token = json.dumps({"mid": 78, "key": "py-deflate", "room_id": "live://78", "platform": "web", "accepts": [1000]})
        ws.send(frame(7, 1, token.encode()))
        assert recv_frames(ws) == [(1, 8, 1, b"")], "auth reply to a compressed auth frame"
        ws.send(frame(2, 2))
        [(ver, op, seq, body)] = recv_frames(ws)
        assert (ver, op, seq) == (1, 3, 2) and len(body) == 4, "heartbeat reply to a compressed heartbeat"

        gifts = [{"user": f"viewer{i}", "gift": "rose", "count": i, "room": 78} for i in range(12)]
        body = json.dumps(gifts).encode()
        assert len(body) > 500, len(body)
        request = urllib.request.Request(f"{http}/goim/push/room?operation=1000&type=live&room=78", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert json.loads(reply.read()) == {"code": 0, "message": ""}
        [(ver, op, seq, raw)] = recv_frames(ws)
        assert op == 9, f"an op-9 batch, got op {op}"
        assert frames(raw) == [(1, 1000, 0, body)], "the pushed JSON, whole"
    print("deflate ok")


if __name__ == "__main__":
    main(*sys.argv[1:])
