#!/usr/bin/env bash
# The daemon's figures:
#  1. `mailoauth token` answered by the daemon vs /bin/true (same hyperfine run);
#  2. an idle daemon with 5 accounts: wake-ups (context switches of all its
#     threads) over IDLE seconds between scheduled refreshes, and its RSS.
#
#   bench/daemon.sh [RUNS] [IDLE]     (needs hyperfine, node + tests/oauth-server deps)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3000}; idle=${2:-60}
command -v hyperfine >/dev/null || { echo "needs hyperfine: apt-get install -y hyperfine" >&2; exit 1; }
[ -d tests/oauth-server/node_modules ] || npm ci --prefix tests/oauth-server --no-audit --no-fund --loglevel=error

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
./install.sh --root "$tmp/inst" --quiet
bin=$tmp/inst/bin/mailoauth

node tests/oauth-server/server.mjs > "$tmp/srv.out" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do grep -q issuer "$tmp/srv.out" 2>/dev/null && break; sleep 0.1; done
issuer=$(head -1 "$tmp/srv.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["issuer"])')

export XDG_CONFIG_HOME=$tmp/config XDG_STATE_HOME=$tmp/state XDG_RUNTIME_DIR=$tmp/run
unset MAILOAUTH_CONFIG DBUS_SESSION_BUS_ADDRESS
mkdir -p "$XDG_CONFIG_HOME/mailoauth" "$XDG_RUNTIME_DIR"
for i in 1 2 3 4 5; do cat >> "$XDG_CONFIG_HOME/mailoauth/config.toml" <<TOML
[accounts.app$i]
provider = "custom"
user = "shared$i@example.test"
client_id = "app-secret"
client_secret = "app-secret-value"
flow = "client-credentials"
token_url = "$issuer/token"
scopes = ["https://outlook.test/.default"]
store = "file"

TOML
done

"$bin" -v daemon 2> "$tmp/daemon.log" & dpid=$!; pids+=($dpid)
for _ in $(seq 100); do [ -S "$XDG_RUNTIME_DIR/mailoauth/daemon.sock" ] && break; sleep 0.1; done
"$bin" token app1 >/dev/null

hyperfine -N --warmup 200 --runs "$runs" --export-json "$tmp/r.json" \
  -n '/bin/true' '/bin/true' \
  -n 'mailoauth token (via daemon)' "$bin token app1" \
  -n 'mailoauth token --sasl xoauth2 (via daemon)' "$bin token app1 --sasl xoauth2" >/dev/null
python3 - "$tmp/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = r[0]["median"]
print("| command | median | ratio to /bin/true (same run) |")
print("|---|---|---|")
for x in r:
    print(f"| `{x['command']}` | {x['median']*1e3:.3f} ms | {x['median']/base:.2f}x |")
PY

# Idle: let the blocking pool's threads retire (keep-alive 3 s), then count.
sleep 8
switches() { cat /proc/$dpid/task/*/status | awk '/ctxt_switches/ {s+=$2} END {print s}'; }
threads() { ls /proc/$dpid/task | wc -l; }
s0=$(switches); t0=$(threads)
sleep "$idle"
s1=$(switches); t1=$(threads)
rss=$(awk '/VmRSS/ {print $2, $3}' /proc/$dpid/status)
echo
echo "idle daemon, 5 accounts, next refresh in $(grep -o 'next refresh in [0-9]* s' "$tmp/daemon.log" | tail -1 | grep -o '[0-9]*') s:"
echo "  wake-ups (context switches, all threads) over ${idle} s: $((s1 - s0))"
echo "  threads: $t0 -> $t1; RSS: $rss"
