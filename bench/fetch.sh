#!/usr/bin/env bash
# `mailoauth fetch` vs mbsync: a 1,000-message (~90 MiB) INBOX over IMAPS from the
# private Dovecot (tests/mail-server) into an empty Maildir, both authenticating
# with XOAUTH2 tokens from the test authorization server. Alternating rounds,
# medians, ratio in the same run. Also times `check` of all three protocols.
#
#   sudo bench/fetch.sh [ROUNDS] [MESSAGES] [SIZE]
# needs: root, .ci/setup, isync + libsasl2-modules-kdexoauth2 (apt-get install -y isync libsasl2-modules-kdexoauth2)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; n=${2:-1000}; size=${3:-94000}
command -v mbsync >/dev/null || { echo "needs mbsync: apt-get install -y isync libsasl2-modules-kdexoauth2" >&2; exit 1; }
ls /usr/lib/*/sasl2/libkdexoauth2.so* >/dev/null 2>&1 || { echo "needs the SASL XOAUTH2 plugin: apt-get install -y libsasl2-modules-kdexoauth2" >&2; exit 1; }

tmp=$(mktemp -d /tmp/mfb.XXXX)
chmod 755 "$tmp"   # the mail daemons run as other users and must enter RUNDIR
srv_pid=
cleanup() { bash tests/mail-server/stop.sh "$tmp/ms" >/dev/null 2>&1 || true; [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
./install.sh --root "$tmp/inst" --quiet
bin=$tmp/inst/bin/mailoauth

node tests/oauth-server/server.mjs > "$tmp/srv.out" 2>/dev/null & srv_pid=$!
for _ in $(seq 100); do grep -q issuer "$tmp/srv.out" 2>/dev/null && break; sleep 0.1; done
issuer=$(head -1 "$tmp/srv.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["issuer"])')
mkdir -p "$tmp/ms"
# start.sh picks free ports just before starting; retry a rare collision.
ports=$(bash tests/mail-server/start.sh "$tmp/ms" "$issuer" 2>/dev/null || bash tests/mail-server/start.sh "$tmp/ms" "$issuer")
p() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$ports" "$1"; }

export XDG_CONFIG_HOME=$tmp/config XDG_STATE_HOME=$tmp/state XDG_RUNTIME_DIR=$tmp/run HOME=$tmp/home
unset MAILOAUTH_CONFIG DBUS_SESSION_BUS_ADDRESS
mkdir -p "$XDG_CONFIG_HOME/mailoauth" "$XDG_RUNTIME_DIR" "$HOME"
cat > "$XDG_CONFIG_HOME/mailoauth/config.toml" <<TOML
[accounts.m]
provider = "custom"
user = "alice@example.test"
client_id = "native-public"
authorize_url = "$issuer/auth"
token_url = "$issuer/token"
redirect_uri = "http://127.0.0.1/callback"
scopes = ["https://outlook.test/IMAP.AccessAsUser.All", "https://outlook.test/POP.AccessAsUser.All", "https://outlook.test/SMTP.Send", "openid", "email", "offline_access"]
store = "file"
imap = { host = "localhost", port = $(p imap_tls), tls = "implicit" }
pop = { host = "localhost", port = $(p pop_tls), tls = "implicit" }
smtp = { host = "localhost", port = $(p submission), tls = "starttls" }
ca_file = "$(p ca)"
TOML

# Sign in: the scripted browser plays the person.
"$bin" login m --no-browser 2> "$tmp/login.err" & lp=$!
for _ in $(seq 100); do url=$(grep -m1 '^http' "$tmp/login.err" || true); [ -n "$url" ] && break; sleep 0.1; done
node tests/oauth-server/browser.mjs "$url" >/dev/null 2>&1
wait $lp

# Seed the server mailbox like Dovecot's own files.
box="$(p maildir_root)/alice@example.test"
mkdir -p "$box"/{new,cur,tmp}
python3 - "$box" "$n" "$size" <<'PY'
import os, sys
box, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line = ("y" * 76 + "\r\n").encode()
for i in range(n):
    head = f"From: seed@example.test\r\nTo: alice@example.test\r\nSubject: bench {i}\r\nMessage-ID: <b{i}@example.test>\r\n\r\n".encode()
    body = head + line * ((size - len(head)) // len(line))
    with open(os.path.join(box, "new", f"{1700000000+i}.M{i}P1.bench"), "wb") as f:
        f.write(body)
PY
owner=$(stat -c %u:%g "$(dirname "$box")")
chown -R "$owner" "$box"
du -sh "$box/new" | awk '{print "mailbox: '"$n"' messages, " $1}'

# mbsync from the snippet, pointed at a bench Maildir.
"$bin" snippet m mbsync | sed "s#~/Mail/m/#$tmp/mb/#g" > "$tmp/mbsyncrc"
sed -i "s#^Inbox .*#Inbox $tmp/mb/INBOX#" "$tmp/mbsyncrc"

times_ours=(); times_mb=()
for r in $(seq "$rounds"); do
  rm -rf "$tmp/ours" "$tmp/mb" "$XDG_STATE_HOME/mailoauth/fetch"; mkdir -p "$tmp/mb"
  sync; t0=$(date +%s.%N)
  "$bin" fetch m --to "$tmp/ours" -q
  t1=$(date +%s.%N)
  mbsync -q -c "$tmp/mbsyncrc" m
  t2=$(date +%s.%N)
  got_ours=$(ls "$tmp/ours/new" | wc -l); got_mb=$(ls "$tmp/mb/INBOX/new" "$tmp/mb/INBOX/cur" 2>/dev/null | grep -vc ':$\|^$' || true)
  times_ours+=("$(echo "$t1 - $t0" | bc)"); times_mb+=("$(echo "$t2 - $t1" | bc)")
  echo "round $r: mailoauth fetch ${times_ours[-1]} s ($got_ours msgs), mbsync ${times_mb[-1]} s ($got_mb msgs)"
done
python3 - "${times_ours[*]}" "${times_mb[*]}" <<'PY'
import statistics, sys
o = [float(x) for x in sys.argv[1].split()]; m = [float(x) for x in sys.argv[2].split()]
print(f"median: mailoauth fetch {statistics.median(o):.2f} s, mbsync {statistics.median(m):.2f} s, ratio {statistics.median(o)/statistics.median(m):.2f}")
PY

# check of all three protocols.
for i in 1 2 3; do
  t0=$(date +%s.%N); "$bin" check m >/dev/null; t1=$(date +%s.%N)
  echo "check imap+pop+smtp: $(echo "$t1 - $t0" | bc) s"
done
