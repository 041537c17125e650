#!/usr/bin/env bash
# Stop the instance started by start.sh: exactly the PIDs recorded in RUNDIR/pids
# (Dovecot master and Postfix master; each stops its own children on SIGTERM).
#   bash tests/mail-server/stop.sh RUNDIR
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: stop.sh RUNDIR" >&2; exit 2; }
RUN=$1
[ -f "$RUN/pids" ] || { echo "stop.sh: no $RUN/pids" >&2; exit 0; }
read -r -a PIDS < "$RUN/pids"
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for _ in $(seq 100); do
  alive=0
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.1
done
for p in "${PIDS[@]}"; do
  if kill -0 "$p" 2>/dev/null; then echo "stop.sh: $p still alive, SIGKILL" >&2; kill -KILL "$p" 2>/dev/null || true; fi
done
rm -f "$RUN/pids"
exit 0
