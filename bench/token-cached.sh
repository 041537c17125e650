#!/usr/bin/env bash
# Cached-token hot path: `mailoauth token NAME` with a valid token in the 0600
# file store, no daemon, against /bin/true and other ways of printing a token,
# all in one hyperfine run (medians; machines here are noisy).
#
#   bench/token-cached.sh [RUNS]        (needs hyperfine: apt-get install hyperfine)
#   PLAIN=0 bench/token-cached.sh       skips the plain `cargo build --release` row
#                                       (a second fat-LTO build, ~7 min here)
#   CALLGRIND=1 bench/token-cached.sh   instead: the instructions of one `mailoauth token`
#                                       (valgrind; noise-free, comparable across machines' moods)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3000}
command -v hyperfine >/dev/null || { echo "needs hyperfine: apt-get install -y hyperfine" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# The binary as users install it (install.sh), and a plain `cargo build --release` one.
./install.sh --root "$tmp/inst" --quiet
bin=$tmp/inst/bin/mailoauth
plain_row=()
if [ "${PLAIN:-1}" != 0 ] && [ "${CALLGRIND:-0}" != 1 ]; then
  cargo build --release --quiet
  plain_row=(-n 'mailoauth token work (plain cargo build)' "$PWD/target/release/mailoauth token work")
fi
export XDG_CONFIG_HOME=$tmp/config XDG_STATE_HOME=$tmp/state XDG_RUNTIME_DIR=$tmp/run
unset MAILOAUTH_CONFIG DBUS_SESSION_BUS_ADDRESS
mkdir -p "$XDG_CONFIG_HOME/mailoauth" "$XDG_STATE_HOME/mailoauth/tokens"
cat > "$XDG_CONFIG_HOME/mailoauth/config.toml" <<'TOML'
[accounts.work]
provider = "microsoft"
user = "alice@contoso.com"
tenant = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000000"
services = ["imap", "smtp"]
store = "file"
TOML
# A realistic Office 365-sized token (~2.4 KB) that stays valid for the run.
tok=$(head -c 1800 /dev/urandom | base64 -w0 | tr '+/' '-_')
now=$(date +%s)
printf '{"version":1,"refresh_token":"%s","login_at":%d,"refresh_token_at":%d,"access":{"mail":{"token":"%s","expires_at":%d,"obtained_at":%d}}}' \
  "$tok" "$now" "$now" "$tok" $((now + 86400)) "$now" > "$XDG_STATE_HOME/mailoauth/tokens/work.json"
chmod 600 "$XDG_STATE_HOME/mailoauth/tokens/work.json"
"$bin" token work >/dev/null

if [ "${CALLGRIND:-0}" = 1 ]; then
  command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install -y valgrind" >&2; exit 1; }
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "$bin" token work >/dev/null 2>"$tmp/cg.err"
  awk '/^summary:/ {printf "instructions of one `mailoauth token work`: %d\n", $2}' "$tmp/cg.out"
  exit 0
fi

py_helper=$tmp/helper.py
cat > "$py_helper" <<'PY'
import json, os, sys, time
# What script helpers do on every call: read a JSON token file, check expiry, print.
d = json.load(open(os.path.join(os.environ["XDG_STATE_HOME"], "mailoauth/tokens/work.json")))
t = d["access"]["mail"]
if t["expires_at"] - time.time() > 300:
    print(t["token"])
PY

hyperfine -N --warmup 200 --runs "$runs" --export-json "$tmp/r.json" \
  -n '/bin/true' '/bin/true' \
  -n 'cat token-file' "cat $XDG_STATE_HOME/mailoauth/tokens/work.json" \
  -n 'mailoauth token work' "$bin token work" \
  -n 'mailoauth token work --sasl xoauth2' "$bin token work --sasl xoauth2" \
  "${plain_row[@]}" >/dev/null
# Script helpers are ~100x slower: fewer runs, own hyperfine run with its own baseline.
hyperfine -N --warmup 5 --runs 100 --export-json "$tmp/py.json" \
  -n '/bin/true' '/bin/true' \
  -n 'python3 helper (json file)' "python3 $py_helper" >/dev/null

python3 - "$tmp/r.json" "$tmp/py.json" <<'PY'
import json, sys
print("| command | median | ratio to /bin/true (same run) |")
print("|---|---|---|")
for i, f in enumerate(sys.argv[1:]):
    r = json.load(open(f))["results"]
    base = r[0]["median"]
    for x in r[(1 if i else 0):]:
        print(f"| `{x['command']}` | {x['median']*1e3:.3f} ms | {x['median']/base:.2f}x |")
PY
