#!/usr/bin/env bash
# Restart the Dovecot of an instance started by start.sh (Postfix stays): what a
# server restart looks like to connected clients — every connection ends at once —
# then Dovecot comes back on the same ports, certificates and mail after DOWN seconds.
#   bash tests/mail-server/restart.sh RUNDIR [DOWN]
# Prints the Unix time (seconds, fractional) at which IMAP answered again.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: restart.sh RUNDIR [DOWN]" >&2; exit 2; }
RUN=$1
DOWN=${2:-1}
read -r DPID PPID_ < "$RUN/pids"
kill -TERM "$DPID" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$DPID" 2>/dev/null && { kill -KILL "$DPID"; sleep 0.5; }
sleep "$DOWN"
setsid dovecot -F -c "$RUN/etc/dovecot.conf" < /dev/null >> "$RUN/dovecot.stdout" 2>&1 &
DPID=$!
echo "$DPID $PPID_" > "$RUN/pids"
PORT=$(sed -n 's/^instance_name = mailoauth-//p' "$RUN/etc/dovecot.conf")
python3 - "$PORT" <<'PY'
import socket, sys, time
end = time.time() + 30
while time.time() < end:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as s:
            if b"AUTH=XOAUTH2" in s.makefile("rb").readline():
                s.sendall(b"a LOGOUT\r\n")
                print(f"{time.time():.3f}")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
sys.exit("restart.sh: Dovecot did not come back within 30 s")
PY
