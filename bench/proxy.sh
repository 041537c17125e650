#!/usr/bin/env bash
# The proxy against email-oauth2-proxy (PyPI `emailproxy`) and a direct connection,
# same run, same Dovecot (tests/mail-server) and authorization server:
#   1. fetch of a $n-message (~90 MiB) INBOX, in one FETCH 1:* and one FETCH per message
#      (awaited, as imaplib scripts and OfflineIMAP do), alternating rounds, medians;
#   1b. the same with mbsync as the client (password LOGIN to the proxies, XOAUTH2 direct);
#   2. login with a cached token (connect + greeting + login), medians of $logins;
#   3. $burst clients connecting at once: greeting p50/p99, how many log in;
#   4. a client that asks for 4 x the mailbox (~360 MiB) and stops reading: proxy RSS growth.
# Both proxies listen in plain on loopback and use implicit TLS to Dovecot; the
# direct client uses TLS and XOAUTH2 itself. The client is bench/proxy_client.py
# (raw sockets, no parsing), so it does not hide the difference.
#
#   sudo bench/proxy.sh [ROUNDS] [MESSAGES] [SIZE] [BURST]
# needs: root, .ci/setup; installs emailproxy into target/bench-venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; n=${2:-1000}; size=${3:-94000}; burst=${4:-200}; logins=30
root=$PWD

venv=$root/target/bench-venv
if [ ! -x "$venv/bin/emailproxy" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q emailproxy
fi
ep_version=$("$venv/bin/pip" show emailproxy | awk '/^Version/ {print $2}')

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ours_port=$(free_port); ep_port=$(free_port); redirect_port=$(free_port)
extra_account_lines="proxy = { imap = \"127.0.0.1:$ours_port\", password = { env = \"PROXY_PW\" } }"
source bench/lib.sh
export PROXY_PW=bench-local-pw

# Ours: the daemon hosts the proxy.
"$bin" daemon 2> "$tmp/daemon.log" & ours_pid=$!; extra_pids="$extra_pids $ours_pid"
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$ours_port) 2>/dev/null && break; sleep 0.1; done

# emailproxy: same server, same client registration, its own sign-in (local server auth).
cat > "$tmp/emailproxy.config" <<INI
[IMAP-$ep_port]
server_address = localhost
server_port = $(p imap_tls)
local_address = 127.0.0.1

[alice@example.test]
permission_url = $issuer/auth
token_url = $issuer/token
oauth2_scope = https://outlook.test/IMAP.AccessAsUser.All openid offline_access
redirect_uri = http://localhost:$redirect_port/callback
client_id = native-public
use_pkce = True
INI
SSL_CERT_FILE=$(p ca) "$venv/bin/emailproxy" --no-gui --local-server-auth \
  --config-file "$tmp/emailproxy.config" --log-file "$tmp/emailproxy.log" > /dev/null 2>&1 & ep_pid=$!
extra_pids="$extra_pids $ep_pid"
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$ep_port) 2>/dev/null && break; sleep 0.1; done
# The first login starts emailproxy's authorisation; the scripted browser completes it.
python3 bench/proxy_client.py login "plain:$ep_port:alice@example.test:$PROXY_PW" 1 > "$tmp/ep-first" & first=$!
for _ in $(seq 300); do
  url=$(grep -o 'authenticate account alice@example.test: http[^ ]*' "$tmp/emailproxy.log" 2>/dev/null | head -1 | sed 's/.*: //' || true)
  [ -n "$url" ] && break; sleep 0.1
done
[ -n "$url" ] || { echo "emailproxy did not ask for authorisation:" >&2; cat "$tmp/emailproxy.log" >&2; exit 1; }
node tests/oauth-server/browser.mjs "$url" > /dev/null 2>&1
wait $first
echo "emailproxy $ep_version signed in; first login $(cut -d' ' -f1 "$tmp/ep-first") ms"

ca=$(p ca)
export TOKEN; TOKEN=$("$bin" token m)
ours="plain:$ours_port:alice@example.test:$PROXY_PW"
ep="plain:$ep_port:alice@example.test:$PROXY_PW"
direct="tls:$(p imap_tls):alice@example.test:$ca"
client() { python3 bench/proxy_client.py "$@"; }

# medians LABEL "DIRECT TIMES" "OURS TIMES" "EMAILPROXY TIMES": medians and ratios
medians() {
  python3 - "$@" <<'PY'
import statistics, sys
d, o, e = (statistics.median(float(x) for x in a.split()) for a in sys.argv[2:])
print(f"{sys.argv[1]} median: direct {d:.2f} s, mailoauth proxy {o:.2f} s, emailproxy {e:.2f} s; "
      f"throughput mailoauth/direct {d/o:.2f}x, mailoauth/emailproxy {e/o:.2f}x")
PY
}

# $1: bulk (one FETCH 1:*) or each (one FETCH per message, awaited)
fetch_rounds() {
  local mode=$1 cmd=$([ "$1" = bulk ] && echo fetch || echo each)
  echo "== fetch of the INBOX, $mode"
  declare -A t=()
  for r in $(seq "$rounds"); do
    for path in direct ours ep; do
      read -r secs bytes < <(client "$cmd" "${!path}")
      t[$path]="${t[$path]:-} $secs"
      echo "round $r $path: $secs s, $bytes bytes, $(echo "scale=1; $bytes / $secs / 1048576" | bc) MiB/s"
    done
  done
  medians "$mode" "${t[direct]}" "${t[ours]}" "${t[ep]}"
}
fetch_rounds bulk
fetch_rounds each

# A real client: mbsync (pipelined UID FETCHes, Maildir with fsync), password LOGIN to the
# proxies, XOAUTH2 through the SASL plugin for the direct path (the snippet's config).
if command -v mbsync >/dev/null && ls /usr/lib/*/sasl2/libkdexoauth2.so* >/dev/null 2>&1; then
  "$bin" snippet m mbsync | sed "s#~/Mail/m/#$tmp/mb-direct/#g; s#^Inbox .*#Inbox $tmp/mb-direct/INBOX#" > "$tmp/mbsync-direct"
  for path in ours ep; do
    port=$([ $path = ours ] && echo "$ours_port" || echo "$ep_port")
    cat > "$tmp/mbsync-$path" <<RC
IMAPAccount m
Host 127.0.0.1
Port $port
User alice@example.test
Pass $PROXY_PW
SSLType None
AuthMechs LOGIN

IMAPStore m-remote
Account m

MaildirStore m-local
Path $tmp/mb-$path/
Inbox $tmp/mb-$path/INBOX

Channel m
Far :m-remote:
Near :m-local:
Patterns INBOX
Create Near
SyncState *
RC
  done
  echo "== fetch of the INBOX with mbsync (empty Maildir each round)"
  declare -A mt=()
  for r in $(seq "$rounds"); do
    for path in direct ours ep; do
      rm -rf "$tmp/mb-$path"; mkdir -p "$tmp/mb-$path"; sync
      t0=$(date +%s.%N); mbsync -q -c "$tmp/mbsync-$path" m; t1=$(date +%s.%N)
      got=$(find "$tmp/mb-$path/INBOX" -type f -path '*/new/*' -o -type f -path '*/cur/*' | wc -l)
      mt[$path]="${mt[$path]:-} $(echo "$t1 - $t0" | bc)"
      echo "round $r $path: $(echo "$t1 - $t0" | bc) s, $got messages"
    done
  done
  medians mbsync "${mt[direct]}" "${mt[ours]}" "${mt[ep]}"
else
  echo "== mbsync not measured: apt-get install -y isync libsasl2-modules-kdexoauth2"
fi

echo "== login with a cached token (median ms, p90 ms; $logins rounds, alternating)"
for path in direct ours ep direct ours; do
  echo "$path: $(client login "${!path}" "$logins")"
done

echo "== $burst clients connecting at once"
for path in ours ep; do
  echo "$path: $(client burst "${!path}" "$burst")"
done

echo "== a client that stops reading during a ~360 MiB fetch (4 x the INBOX)"
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
for path in ours ep; do
  pid=$([ $path = ours ] && echo $ours_pid || echo $ep_pid)
  before=$(rss "$pid")
  coproc STALL { client stall "${!path}" 4; }
  read -r _ <&"${STALL[0]}"
  peak=$before
  for _ in $(seq 20); do sleep 0.5; now=$(rss "$pid"); [ "$now" -gt "$peak" ] && peak=$now; done
  echo go >&"${STALL[1]}"; wait "$STALL_PID" 2>/dev/null || true
  echo "$path: RSS before ${before} KiB, peak while stalled ${peak} KiB, growth $(( (peak - before) / 1024 )) MiB"
done
