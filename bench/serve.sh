#!/usr/bin/env bash
# The service's figures, on the embedded SQLite and on a private PostgreSQL:
#  1. N mailboxes imported from a scripted provider (bench/scripted_provider.py),
#     their access tokens all expiring within the same 10 minutes, the refresher
#     at RATE refreshes/s: the highest rate the provider saw in any second, how
#     many mailboxes were refreshed twice, and the least validity a token had
#     left when it was renewed (must stay over min_validity, 300 s);
#  2. RSS of the node once all N are loaded and each has served one token;
#  3. the token API on a fresh token with wrk (keep-alive HTTP/1.1, same
#     machine): requests/s and latency percentiles.
#
#   bench/serve.sh [sqlite|postgres|both]     (root: the PostgreSQL cluster runs as `postgres`)
#   N=10000 RATE=50 DURATION=20 CONNECTIONS=64 BIN=target/release/mailoauth-serve
#
# Not for CI: a run takes about 5 minutes per database. Installs wrk with apt if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-both}
n=${N:-10000} rate=${RATE:-50} dur=${DURATION:-20} conns=${CONNECTIONS:-64}
# Tokens expire from FIRST s after minting, over a 600 s window (the import takes a while).
first=${FIRST:-600}
if [ -z "${BIN:-}" ]; then
  cargo build --release -p mailoauth-serve --quiet
  bin=target/release/mailoauth-serve
else
  bin=$BIN
fi
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
source bench/serve_lib.sh /tmp/msb

run_one() {
  local db=$1 dir=$tmp/$1 port url
  bench_home "$dir"
  local database=""
  if [ "$db" = postgres ]; then
    start_pg "$dir"
  fi
  port=$(free_port)
  cat > "$dir/config/mailoauth/config.toml" <<TOML
[serve]
listen = "127.0.0.1:$port"
$database
refresh_rate = $rate

$(bench_connector "$port")
TOML
  local key; key=$("$bin" keys create --scope admin 2>/dev/null)
  curl -sf "http://127.0.0.1:$pp/mint?n=$n&first=$first&window=600&connector=bench" > "$dir/import.jsonl"
  local t0; t0=$(date +%s.%N)
  "$bin" import < "$dir/import.jsonl" > "$dir/ids.tsv" 2>"$dir/import.err"
  local import_s; import_s=$(echo "$(date +%s.%N) - $t0" | bc)

  "$bin" 2> "$dir/serve.log" & local spid=$!; pids+=($spid)
  for _ in $(seq 100); do grep -q "listening on" "$dir/serve.log" && break; sleep 0.1; done
  # Wait until the refresher has renewed all that are due (tokens expiring
  # within refresh_ahead, 900 s), or the window is over.
  local due stats deadline=$(( $(date +%s) + 700 ))
  due=$(python3 -c "
import json,sys,time
now=time.time(); print(sum(1 for l in open(sys.argv[1]) if json.loads(l)['expires_at']-now <= 900+60))" "$dir/import.jsonl")
  while :; do
    stats=$(curl -sf "http://127.0.0.1:$pp/stats?min_validity=300")
    [ "$(json "$stats" '["mailboxes_refreshed"]')" -ge "$due" ] && break
    [ "$(date +%s)" -lt "$deadline" ] || { echo "refresher did not finish: $stats" >&2; break; }
    sleep 2
  done
  # Every mailbox serves one token (from memory: the refresher put them there).
  python3 - "$port" "$key" "$dir/ids.tsv" <<'PY'
import http.client, sys
port, key, ids = sys.argv[1], sys.argv[2], [l.split("\t")[0] for l in open(sys.argv[3])]
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
bad = 0
for i in ids:
    c.request("GET", f"/v1/mailboxes/{i}/token", headers={"Authorization": f"Bearer {key}"})
    r = c.getresponse(); r.read()
    bad += r.status != 200
assert bad == 0, f"{bad} of {len(ids)} token requests failed"
PY
  sleep 2
  local rss; rss=$(awk '/VmRSS/ {print $2}' "/proc/$spid/status")
  local id0; id0=$(head -1 "$dir/ids.tsv" | cut -f1)
  wrk -t2 -c"$conns" -d"${dur}s" --latency -H "Authorization: Bearer $key" \
    "http://127.0.0.1:$port/v1/mailboxes/$id0/token" > "$dir/wrk.txt"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.txt")
  p50=$(awk '$1=="50%" {print $2}' "$dir/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$dir/wrk.txt")
  local non2xx; non2xx=$(awk '/Non-2xx/ {print $NF}' "$dir/wrk.txt")
  kill "$spid"; wait "$spid" 2>/dev/null || true
  printf '%s: %d mailboxes imported in %.1f s; refresher: %s of %s due refreshed, max %s/s (rate %s), refreshed twice %s, least validity left %s s, under min_validity %s, refused %s\n' \
    "$db" "$n" "$import_s" "$(json "$stats" '["mailboxes_refreshed"]')" "$due" "$(json "$stats" '["max_per_second"]')" "$rate" \
    "$(json "$stats" '["refreshed_twice"]')" "$(json "$stats" '["least_validity_left"]')" \
    "$(json "$stats" '["refreshed_under_min_validity"]')" "$(json "$stats" '["refused"]')"
  printf '%s: RSS after %d mailboxes each served a token: %d KiB (%.1f MB)\n' "$db" "$n" "$rss" "$(echo "$rss/1024" | bc -l)"
  printf '%s: token API, fresh token, wrk -t2 -c%s -d%ss: %s req/s, p50 %s, p99 %s%s\n' "$db" "$conns" "$dur" "$rps" "$p50" "$p99" \
    "${non2xx:+, NON-2XX $non2xx}"
  if [ "$db" = postgres ]; then
    stop_pg
  fi
}

case $which in
  sqlite|postgres) run_one "$which" ;;
  both) run_one sqlite; run_one postgres ;;
  *) echo "usage: bench/serve.sh [sqlite|postgres|both]" >&2; exit 2 ;;
esac
