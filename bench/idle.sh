#!/usr/bin/env bash
# An idle service node: N mailboxes imported (tokens valid for two hours, so
# no refresh falls due), webhooks configured (the deliverer runs), nothing
# happening. Over IDLE seconds: the node's wake-ups (voluntary + involuntary
# context switches of all its threads) and, on PostgreSQL, those of the
# server processes that answer it. Each binary of BINS runs in turn on a
# fresh database in the same run, so before/after compare on one machine
# state.
#
#   sudo bench/idle.sh [sqlite|postgres|both]
#   N=1000 IDLE=60 BINS="after=target/release/mailoauth-serve before=/path/to/older"
#
# Root: the PostgreSQL cluster runs as `postgres`. Not for CI (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-both}
n=${N:-1000} idle=${IDLE:-60}
if [ -z "${BINS:-}" ]; then
  cargo build --release -p mailoauth-serve --quiet
  BINS="after=target/release/mailoauth-serve"
fi
source bench/serve_lib.sh /tmp/mib
# Context switches of every thread of the given processes over $1 seconds,
# threads that start or end meanwhile included (sampled every 100 ms; a
# thread that ends loses at most its last 100 ms).
switches() {
  python3 - "$@" <<'PY'
import glob, sys, time
secs, pids = float(sys.argv[1]), sys.argv[2:]
def sample():
    out = {}
    for pid in pids:
        for st in glob.glob(f"/proc/{pid}/task/*/status"):
            try:
                n = sum(int(l.split()[1]) for l in open(st) if "ctxt_switches" in l)
            except OSError:
                continue
            out[st] = n
    return out
first = sample(); last = dict(first); end = time.monotonic() + secs
while time.monotonic() < end:
    time.sleep(0.1)
    last.update(sample())
print(sum(v - first.get(k, 0) for k, v in last.items()))
PY
}

run_one() {
  local db=$1 label=$2 bin=$3 dir=$tmp/$1-$2 port
  bench_home "$dir"
  # A webhook receiver that accepts everything (the connect events of the import).
  local hp; hp=$(free_port)
  python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()' "$hp" & local hook=$!; pids+=($hook)
  local database="" postmaster=
  if [ "$db" = postgres ]; then
    start_pg "$dir"
  fi
  port=$(free_port)
  cat > "$dir/config/mailoauth/config.toml" <<TOML
[serve]
listen = "127.0.0.1:$port"
$database
webhooks = ["http://127.0.0.1:$hp/hook"]
webhook_secret = "bench-webhook-secret-0123456789"

$(bench_connector "$port")
TOML
  "$bin" keys create --scope admin >/dev/null 2>&1
  curl -sf "http://127.0.0.1:$pp/mint?n=$n&first=7200&window=600&connector=bench" > "$dir/import.jsonl"
  "$bin" import < "$dir/import.jsonl" > "$dir/ids.tsv" 2>"$dir/import.err"

  "$bin" 2> "$dir/serve.log" & local spid=$!; pids+=($spid)
  for _ in $(seq 100); do grep -q "listening on" "$dir/serve.log" && break; sleep 0.1; done
  # Settle: start-up rounds done, the import's events delivered.
  sleep 10
  local pg=()
  [ -n "$postmaster" ] && mapfile -t pg < <(pgrep -P "$postmaster")
  rounds() { curl -sf "http://127.0.0.1:$port/metrics" | awk -F'[{}"]' '/^mailoauth_background_rounds_total/ {printf "%s=%d ", $3, $5}' | sed 's/ $//'; }
  local r0; r0=$(rounds || true)
  local node_w pg_w=0
  if [ -n "$postmaster" ]; then
    switches "$idle" "${pg[@]}" > "$dir/pg.w" & local pw=$!
  fi
  node_w=$(switches "$idle" "$spid")
  [ -n "$postmaster" ] && { wait "$pw"; pg_w=$(cat "$dir/pg.w"); }
  local r1; r1=$(rounds || true)
  local threads; threads=$(ls "/proc/$spid/task" | wc -l)
  local rss; rss=$(awk '/VmRSS/ {print $2}' "/proc/$spid/status")
  kill "$spid"; wait "$spid" 2>/dev/null || true
  kill "$provider" "$hook" 2>/dev/null || true
  printf '%s %s: %d mailboxes, %d s idle: node %d wake-ups (%.1f/s), %d threads, RSS %d KiB' \
    "$db" "$label" "$n" "$idle" "$node_w" "$(echo "$node_w / $idle" | bc -l)" "$threads" "$rss"
  [ -n "$postmaster" ] && printf '; PostgreSQL processes %d wake-ups' "$pg_w"
  printf '\n'
  if [ -n "$r1" ]; then
    echo "  worker rounds at the start: ${r0}; at the end: ${r1}"
  fi
  if [ "$db" = postgres ]; then
    stop_pg
  fi
}

dbs=(sqlite postgres)
case $which in
  sqlite|postgres) dbs=("$which") ;;
  both) ;;
  *) echo "usage: bench/idle.sh [sqlite|postgres|both]" >&2; exit 2 ;;
esac
for db in "${dbs[@]}"; do
  for pair in $BINS; do
    run_one "$db" "${pair%%=*}" "${pair#*=}"
  done
done
