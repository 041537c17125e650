#!/usr/bin/env python3
"""The measuring client of bench/proxy.sh: raw IMAP over sockets, so that the
client's own parsing does not hide the difference between the paths it measures.

  proxy_client.py fetch  TARGET            seconds and bytes of FETCH 1:* BODY.PEEK[]
  proxy_client.py each   TARGET            the same, one FETCH per message, each awaited
                                           (as imaplib scripts and OfflineIMAP do)
  proxy_client.py login  TARGET ROUNDS     median and p90 ms of connect+login
  proxy_client.py burst  TARGET CLIENTS    connect all at once: greeting p50/p99, logins served
  proxy_client.py stall  TARGET COPIES     request COPIES x the mailbox, read 1 MiB, stop reading

TARGET is `plain:PORT:USER:PASSWORD` (a proxy, LOGIN) or `tls:PORT:USER:CAFILE`
(Dovecot directly, XOAUTH2 with the token in $TOKEN).
"""
import asyncio
import base64
import os
import socket
import ssl
import statistics
import sys
import time


def parse(target):
    kind, port, user, extra = target.split(":", 3)
    return kind, int(port), user, extra


def connect(target):
    """An open connection past the greeting, and the login command to send."""
    kind, port, user, extra = parse(target)
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kind == "tls":
        ctx = ssl.create_default_context(cafile=extra)
        s = ctx.wrap_socket(s, server_hostname="localhost")
        ir = base64.b64encode(f"user={user}\x01auth=Bearer {os.environ['TOKEN']}\x01\x01".encode()).decode()
        login = f"L AUTHENTICATE XOAUTH2 {ir}\r\n"
    else:
        login = f'L LOGIN "{user}" "{extra}"\r\n'
    return s, login


def until(s, buf, marker):
    """Read until `marker` appears; returns (everything read, bytes count)."""
    while marker not in buf[-4096:]:
        chunk = s.recv(1 << 18)
        if not chunk:
            raise SystemExit(f"connection closed waiting for {marker!r}: {bytes(buf[-300:])!r}")
        buf += chunk
    return buf


def login(target):
    s, cmd = connect(target)
    buf = until(s, bytearray(), b"\r\n")  # greeting
    s.sendall(cmd.encode())
    buf = until(s, bytearray(), b"L OK")
    return s


def read_response(s, tag):
    """Bytes of the response up to and including the tagged OK."""
    total, tail, done = 0, b"", b"\r\n" + tag + b" OK"
    while True:
        chunk = s.recv(1 << 18)
        if not chunk:
            raise SystemExit("closed during FETCH")
        total += len(chunk)
        tail = (tail + chunk)[-64:]
        if done in tail:
            return total


def fetch(target, each):
    t0 = time.perf_counter()
    s = login(target)
    s.sendall(b"S SELECT INBOX\r\n")
    exists = until(s, bytearray(), b"S OK")
    n = int(exists.split(b" EXISTS")[0].rsplit(b"* ", 1)[1])
    total = 0
    if each:
        for i in range(1, n + 1):
            tag = b"F%d" % i
            s.sendall(tag + b" FETCH %d BODY.PEEK[]\r\n" % i)
            total += read_response(s, tag)
    else:
        s.sendall(b"F FETCH 1:* BODY.PEEK[]\r\n")
        total = read_response(s, b"F")
    s.sendall(b"Z LOGOUT\r\n")
    s.close()
    print(f"{time.perf_counter() - t0:.4f} {total}")


def login_times(target, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        s = login(target)
        times.append((time.perf_counter() - t0) * 1000)
        s.sendall(b"Z LOGOUT\r\n")
        s.close()
    times.sort()
    print(f"{statistics.median(times):.2f} {times[int(len(times) * 0.9)]:.2f}")


async def burst(target, clients):
    kind, port, user, pw = parse(target)
    start = asyncio.Event()
    greet, served, errors = [], [0], []

    async def one():
        await start.wait()
        t0 = time.perf_counter()
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
            await asyncio.wait_for(r.readline(), 30)
            greet.append((time.perf_counter() - t0) * 1000)
            w.write(f'L LOGIN "{user}" "{pw}"\r\n'.encode())
            while True:
                line = await asyncio.wait_for(r.readline(), 180)
                if not line:
                    raise ConnectionError("closed before login completed")
                if line.startswith(b"L "):
                    break
            if line.startswith(b"L OK"):
                served[0] += 1
            else:
                errors.append(line.decode(errors="replace").strip())
            w.write(b"Z LOGOUT\r\n")
            await w.drain()
            w.close()
        except Exception as e:  # noqa: BLE001 - every failure kind is a result here
            errors.append(f"{type(e).__name__}: {e}")

    tasks = [asyncio.create_task(one()) for _ in range(clients)]
    await asyncio.sleep(0.2)
    start.set()
    await asyncio.gather(*tasks)
    greet.sort()
    p = lambda q: greet[min(len(greet) - 1, int(len(greet) * q))] if greet else float("nan")  # noqa: E731
    print(f"greeted {len(greet)}/{clients} p50 {p(0.5):.1f} ms p99 {p(0.99):.1f} ms; logged in {served[0]}/{clients}; errors {len(errors)} {sorted(set(errors))[:3]}")


def stall(target, copies):
    s = login(target)
    s.sendall(b"S SELECT INBOX\r\n")
    until(s, bytearray(), b"S OK")
    s.sendall(b"".join(b"F%d FETCH 1:* BODY.PEEK[]\r\n" % i for i in range(copies)))
    got = 0
    while got < 1 << 20:
        got += len(s.recv(1 << 16))
    print("stalled", flush=True)
    sys.stdin.readline()  # hold the connection, unread, until told to go
    s.close()


if __name__ == "__main__":
    cmd, target = sys.argv[1], sys.argv[2]
    if cmd in ("fetch", "each"):
        fetch(target, cmd == "each")
    elif cmd == "login":
        login_times(target, int(sys.argv[3]))
    elif cmd == "burst":
        asyncio.run(burst(target, int(sys.argv[3])))
    elif cmd == "stall":
        stall(target, int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
