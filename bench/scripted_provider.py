#!/usr/bin/env python3
"""A scripted OAuth token endpoint for the service's scale benchmarks.

Mints N delegated sign-ins whose access tokens all expire within one window,
then answers refresh_token grants with strict rotation (a used refresh token
is refused with invalid_grant, like Microsoft's and oidc-provider's), and
keeps what a judge needs: every refresh's time and mailbox, so the benchmark
can tell the highest rate in any one second, whether a mailbox was refreshed
twice, and how much validity each token had left when it was renewed.

    scripted_provider.py            # prints {"port": P} once listening on 127.0.0.1
    GET  /mint?n=N&first=S&window=W&connector=C   JSON lines for `mailoauth-serve import`
    POST /token                     refresh_token grant
    GET  /stats?min_validity=M      the judge's figures
"""
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
gen = {}        # mailbox index -> current refresh-token generation
expiry = {}     # mailbox index -> expiry of its minted access token
refreshes = []  # (time, mailbox index)
refused = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()}
        if u.path == "/mint":
            n, first, window = int(q["n"]), int(q["first"]), int(q["window"])
            now = int(time.time())
            lines = []
            with lock:
                for i in range(n):
                    gen[i] = 0
                    expiry[i] = now + first + (window * i) // max(n, 1)
                    lines.append(json.dumps({
                        "connector": q.get("connector", "bench"),
                        "email": f"user{i}@bench.test",
                        "refresh_token": f"rt-{i}-0",
                        "access_token": f"at-{i}-0",
                        "expires_at": expiry[i],
                        "obtained_at": expiry[i] - 3600,
                    }))
            self.reply(200, "\n".join(lines) + "\n", "application/x-ndjson")
        elif u.path == "/stats":
            min_validity = int(q.get("min_validity", "0"))
            with lock:
                per_second = {}
                count = {}
                worst_left = None
                late = 0
                for t, i in refreshes:
                    per_second[int(t)] = per_second.get(int(t), 0) + 1
                    count[i] = count.get(i, 0) + 1
                    if count[i] == 1:
                        left = expiry[i] - t
                        worst_left = left if worst_left is None else min(worst_left, left)
                        if left < min_validity:
                            late += 1
                self.reply(200, json.dumps({
                    "refreshes": len(refreshes),
                    "mailboxes_refreshed": len(count),
                    "refreshed_twice": sum(1 for c in count.values() if c > 1),
                    "max_per_second": max(per_second.values()) if per_second else 0,
                    "first": min(t for t, _ in refreshes) if refreshes else None,
                    "last": max(t for t, _ in refreshes) if refreshes else None,
                    "least_validity_left": worst_left,
                    "refreshed_under_min_validity": late,
                    "refused": refused,
                }))
        else:
            self.reply(404, "{}")

    def do_POST(self):
        global refused
        n = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(min(n, 65536)).decode()).items()}
        rt = form.get("refresh_token", "")
        ok = False
        if form.get("grant_type") == "refresh_token" and rt.startswith("rt-"):
            _, i, g = rt.split("-")
            i, g = int(i), int(g)
            with lock:
                if gen.get(i) == g:
                    gen[i] = g + 1
                    refreshes.append((time.time(), i))
                    ok = True
                else:
                    refused += 1
        if not ok:
            self.reply(400, json.dumps({"error": "invalid_grant", "error_description": "refresh token unknown or used"}))
            return
        self.reply(200, json.dumps({
            "access_token": f"at-{i}-{g + 1}",
            "refresh_token": f"rt-{i}-{g + 1}",
            "expires_in": 3600,
            "token_type": "Bearer",
        }))


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
