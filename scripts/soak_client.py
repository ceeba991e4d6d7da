"""The soak load of scripts/soak.sh, against one corecast on loopback.

Holds STABLE members for the whole run and CHURN members that connect, live a
few seconds, change rooms and go, half over TCP and half over WebSocket,
while four publishers push at a steady rate, each with a sequence number per
target: to rooms, to stable members' keys, to their mids, and to everyone.

Checks, printed as one JSON line at the end:
- every stable member got every push addressed to it, exactly once, in order;
- no member (stable or churning) ever saw a stream's numbers go backwards;
- every push was answered {"code":0}.

Usage: soak_client.py TCP_ADDR WS_ADDR HTTP_ADDR SECONDS [STABLE CHURN]
(SIGUSR1 is not used: the shell samples the server while this runs).
"""

import asyncio
import json
import random
import struct
import sys
import time

import websockets

HEADER = struct.Struct(">ihhii")
ROOMS = 10
OP_PUSH = 1000


def frame(op, seq, body=b""):
    return HEADER.pack(16 + len(body), 16, 1, op, seq) + body


def split(data):
    """Whole goim frames off the front of data: (frames, bytes used)."""
    out, pos = [], 0
    while len(data) - pos >= 16:
        length, _header, _ver, op, seq = HEADER.unpack_from(data, pos)
        if length < 16 or len(data) - pos < length:
            break
        out.append((op, seq, data[pos + 16 : pos + length]))
        pos += length
    return out, pos


class Member:
    def __init__(self, stats, mid, key, room, stable):
        self.stats, self.mid, self.key, self.room, self.stable = stats, mid, key, room, stable
        self.last = {}  # stream -> last number seen
        self.got = {}  # stream -> list of numbers (stable members only)
        self.authed = asyncio.Event()

    def token(self):
        return json.dumps(
            {"mid": self.mid, "key": self.key, "room_id": f"live://{self.room}", "platform": "soak", "accepts": [OP_PUSH]}
        ).encode()

    def on_frames(self, frames):
        for op, _seq, body in frames:
            if op == 8:
                self.authed.set()
            elif op == 9:
                inner, _ = split(body)
                self.on_frames(inner)
            elif op == OP_PUSH:
                push = json.loads(body)
                stream, n = push["s"], push["n"]
                if n <= self.last.get(stream, -1):
                    self.stats["backwards"] += 1
                self.last[stream] = n
                if self.stable:
                    self.got.setdefault(stream, []).append(n)
                self.stats["received"] += 1


async def run_tcp(member, addr, life_s, stop):
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(frame(7, 1, member.token()))
    buf = b""
    deadline = time.monotonic() + life_s
    next_beat = time.monotonic() + 20
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.5)
            except asyncio.TimeoutError:
                data = None
            if data == b"":
                member.stats["closed_by_server"] += 1
                return
            if data:
                buf += data
                frames, used = split(buf)
                buf = buf[used:]
                member.on_frames(frames)
            now = time.monotonic()
            if now > next_beat:
                writer.write(frame(2, 2))
                next_beat = now + 20
            if not member.stable and member.authed.is_set() and random.random() < 0.02:
                member.room = random.randint(1, ROOMS)
                writer.write(frame(12, 3, f"live://{member.room}".encode()))
                member.stats["room_changes"] += 1
    finally:
        writer.close()


async def run_ws(member, addr, life_s, stop):
    async with websockets.connect(f"ws://{addr}/sub", max_size=2**20, open_timeout=10) as ws:
        await ws.send(frame(7, 1, member.token()))
        deadline = time.monotonic() + life_s
        next_beat = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                message = await asyncio.wait_for(ws.recv(), 0.5)
                frames, _ = split(message)
                member.on_frames(frames)
            except asyncio.TimeoutError:
                pass
            except websockets.ConnectionClosed:
                member.stats["closed_by_server"] += 1
                return
            now = time.monotonic()
            if now > next_beat:
                await ws.send(frame(2, 2))
                next_beat = now + 20
            if not member.stable and member.authed.is_set() and random.random() < 0.02:
                member.room = random.randint(1, ROOMS)
                await ws.send(frame(12, 3, f"live://{member.room}".encode()))
                member.stats["room_changes"] += 1


async def http_post(conn, host, path, body):
    reader, writer = conn
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return json.loads(await reader.readexactly(length))


async def publisher(kind, http, targets, per_s, sent, stats, stop):
    """Sequential pushes at `per_s` a second: each reply is the ordering point."""
    host, port = http.rsplit(":", 1)
    conn = await asyncio.open_connection(host, int(port))
    n = {t: 0 for t in targets}
    interval = 1.0 / per_s
    next_at = time.monotonic()
    while not stop.is_set():
        target = random.choice(targets)
        stream = f"{kind}:{target}"
        body = json.dumps({"s": stream, "n": n[target], "pad": "x" * random.randint(0, 300)}).encode()
        path = {
            "room": f"/goim/push/room?operation={OP_PUSH}&type=live&room={target}",
            "keys": f"/goim/push/keys?operation={OP_PUSH}&keys={target}",
            "mids": f"/goim/push/mids?operation={OP_PUSH}&mids={target}",
            "all": f"/goim/push/all?operation={OP_PUSH}",
        }[kind]
        reply = await http_post(conn, host, path, body)
        if reply.get("code") != 0:
            stats["push_errors"] += 1
        else:
            sent.setdefault(stream, []).append(n[target])
            n[target] += 1
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def main(tcp, ws, http, seconds, stable_n=200, churn_n=300):
    stats = {k: 0 for k in ("received", "backwards", "closed_by_server", "room_changes", "push_errors", "connects")}
    stop = asyncio.Event()
    stable = []
    tasks = []
    for i in range(stable_n):
        m = Member(stats, 1_000_000 + i, f"soak-stable-{i}", i % ROOMS + 1, True)
        stable.append(m)
        run = run_tcp if i % 2 == 0 else run_ws
        tasks.append(asyncio.create_task(run(m, tcp if i % 2 == 0 else ws, 1e9, stop)))
        stats["connects"] += 1
    await asyncio.wait_for(asyncio.gather(*(m.authed.wait() for m in stable)), 60)
    # Every registration is visible to the publishers' shards once the API
    # sees the connections online (online counts travel every online_sync_ms).
    await asyncio.sleep(1.0)
    print(json.dumps({"phase": "stable members online", "members": stable_n}), flush=True)

    async def churner(i):
        while not stop.is_set():
            m = Member(stats, 2_000_000 + i, "", random.randint(1, ROOMS), False)
            stats["connects"] += 1
            try:
                if i % 2 == 0:
                    await run_tcp(m, tcp, random.uniform(2, 10), stop)
                else:
                    await run_ws(m, ws, random.uniform(2, 10), stop)
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
                stats["churn_connect_errors"] = stats.get("churn_connect_errors", 0) + 1
                await asyncio.sleep(0.5)

    churners = [asyncio.create_task(churner(i)) for i in range(churn_n)]
    sent = {}
    keys = [m.key for m in stable]
    mids = [m.mid for m in stable]
    pubs = [
        asyncio.create_task(publisher("room", http, list(range(1, ROOMS + 1)), 100, sent, stats, stop)),
        asyncio.create_task(publisher("keys", http, keys, 40, sent, stats, stop)),
        asyncio.create_task(publisher("mids", http, mids, 40, sent, stats, stop)),
        asyncio.create_task(publisher("all", http, ["all"], 5, sent, stats, stop)),
    ]
    await asyncio.sleep(seconds)
    stop_pub = pubs
    for p in stop_pub:
        p.cancel()
    await asyncio.gather(*stop_pub, return_exceptions=True)
    # Let the last pushes arrive, then stop everyone.
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.gather(*churners, *tasks, return_exceptions=True)

    missing = duplicated = 0
    for m in stable:
        wanted = {
            f"room:{m.room}": sent.get(f"room:{m.room}", []),
            f"keys:{m.key}": sent.get(f"keys:{m.key}", []),
            f"mids:{m.mid}": sent.get(f"mids:{m.mid}", []),
            "all:all": sent.get("all:all", []),
        }
        for stream, numbers in wanted.items():
            got = m.got.get(stream, [])
            if got != numbers:
                missing += len(set(numbers) - set(got))
                duplicated += len(got) - len(set(got))
    result = dict(stats)
    result.update(
        phase="done",
        pushes_sent=sum(len(v) for v in sent.values()),
        stable_missing=missing,
        stable_duplicated=duplicated,
        ok=missing == 0 and duplicated == 0 and stats["backwards"] == 0 and stats["push_errors"] == 0,
    )
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    extra = [int(a) for a in args[4:]]
    sys.exit(asyncio.run(main(args[0], args[1], args[2], float(args[3]), *extra)))
