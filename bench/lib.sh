# Shared setup of the mail benchmarks (sourced; needs root): the release binary from
# install.sh, the test authorization server, the private Dovecot, a config with
# account `m` (alice, IMAPS/POP3S/submission), a login by the scripted browser and
# an INBOX of $n messages of about $size bytes.
#
# In: $n, $size, optional $extra_account_lines (added to [accounts.m]).
# Out: $extra_pids (append PIDs to stop at exit), $tmp, $bin, $issuer, $ports, p KEY (a port or path of the mail server),
#      $box (the server Maildir), the XDG_* variables exported.
set -euo pipefail
extra_account_lines=${extra_account_lines:-}
tmp=$(mktemp -d /tmp/mfb.XXXX)
chmod 755 "$tmp"   # the mail daemons run as other users and must enter RUNDIR
srv_pid=
extra_pids=
cleanup() { for pid in $extra_pids; do kill "$pid" 2>/dev/null || true; done; bash tests/mail-server/stop.sh "$tmp/ms" >/dev/null 2>&1 || true; [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null; rm -rf "$tmp"; }
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
$extra_account_lines
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

