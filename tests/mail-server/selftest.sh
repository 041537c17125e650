#!/usr/bin/env bash
# Self-test of the private mail server (Dovecot + Postfix) against the test OAuth server,
# with curl, node, python3 and openssl only (no cargo). Needs root (see README.md).
#   bash tests/mail-server/selftest.sh
# Prints "ok - ..." / "not ok - ..." lines and a final "N passed, N failed"; exit 1 on failure.
# KEEP_TMP=1 keeps the run directory (logs) for inspection.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OAUTH=$(cd "$HERE/../oauth-server" && pwd)
bash "$HERE/install.sh" || exit 1
if [ ! -d "$OAUTH/node_modules/oidc-provider" ]; then
  npm ci --prefix "$OAUTH" --no-audit --no-fund >&2 || exit 1
fi

TMP=$(mktemp -d /tmp/mailsrv.XXXXXX)
chmod 755 "$TMP"
RUN=$TMP/run
PIDS=()
cleanup() {
  bash "$HERE/stop.sh" "$RUN" 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null
  if [ "${KEEP_TMP:-}" = 1 ]; then echo "# kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

source "$HERE/../tap.sh"

# j EXPR: evaluate a JS expression over the JSON on stdin (bound to x); jwt(t) = JWT payload.
j() {
  node -e '
    let s = "";
    process.stdin.on("data", (d) => { s += d; }).on("end", () => {
      const x = s.trim() ? JSON.parse(s) : undefined;
      const jwt = (t) => JSON.parse(Buffer.from(String(t).split(".")[1], "base64url"));
      const v = eval(process.argv[1]);
      console.log(typeof v === "string" ? v : JSON.stringify(v));
    });' -- "$1"
}

# start_oauth NAME [VAR=value ...] -> sets ISSUER (not in a subshell: PIDS must keep the pid)
start_oauth() {
  local name=$1; shift
  env "$@" node "$OAUTH/server.mjs" > "$TMP/$name.out" 2> "$TMP/$name.err" &
  PIDS+=($!)
  for _ in $(seq 200); do [ -s "$TMP/$name.out" ] && break; sleep 0.05; done
  ISSUER=$(head -n1 "$TMP/$name.out" | j x.issuer)
}

# user_token ISSUER USER SCOPE -> token response JSON (device flow, login_hint picks the user)
user_token() {
  local da dc uc
  da=$(curl -s "$1/device/auth" -d client_id=native-public --data-urlencode "login_hint=$2" --data-urlencode "scope=$3")
  dc=$(j x.device_code <<< "$da"); uc=$(j x.user_code <<< "$da")
  node "$OAUTH/browser.mjs" --device "$1" "$uc" > /dev/null 2>> "$TMP/browser.err" || { echo '{}'; return; }
  curl -s "$1/token" -d grant_type=urn:ietf:params:oauth:grant-type:device_code -d client_id=native-public -d "device_code=$dc"
}
app_token() {
  curl -s "$1/token" -d grant_type=client_credentials -d client_id=app-secret -d client_secret=app-secret-value \
    --data-urlencode "scope=$2" | j x.access_token
}

O=https://outlook.test
ALL="openid offline_access $O/IMAP.AccessAsUser.All $O/POP.AccessAsUser.All $O/SMTP.Send"

echo "# start: oauth servers A (trusted), B (trusted, ACCESS_TOKEN_TTL=2), C (not trusted); mail server"
start_oauth a; ISS_A=$ISSUER
start_oauth b ACCESS_TOKEN_TTL=2; ISS_B=$ISSUER
start_oauth c; ISS_C=$ISSUER
[ -n "$ISS_A" ] && [ -n "$ISS_B" ] && [ -n "$ISS_C" ] || { echo "oauth servers did not start"; cat "$TMP"/*.err; exit 1; }
T0=$(date +%s%N)
bash "$HERE/start.sh" "$RUN" "$ISS_A" "$ISS_B" > "$TMP/start.out" 2> "$TMP/start.err"
expect "start.sh exits 0" "$?" "0"
echo "# start.sh took $(( ($(date +%s%N) - T0) / 1000000 )) ms"
START=$(cat "$TMP/start.out")
expect "start.sh prints exactly one line" "$(wc -l < "$TMP/start.out")" "1"
expect "JSON has every field" "$(j 'Object.keys(x).sort().join(",")' <<< "$START")" \
  "ca,dovecot_log,imap,imap_tls,key_dir,maildir_root,pids,pop,pop_tls,postfix_log,smtp_relay,submission,submissions"
if [ "$(j 'x.pids.length' <<< "$START" 2>/dev/null)" != 2 ]; then
  echo "# start.sh failed:"; sed 's/^/#   /' "$TMP/start.err"; echo "$PASSED passed, $((FAILED + 1)) failed"; exit 1
fi
IMAPS=$(j x.imap_tls <<< "$START"); IMAP=$(j x.imap <<< "$START")
POPS=$(j x.pop_tls <<< "$START"); POP=$(j x.pop <<< "$START")
SUB=$(j x.submission <<< "$START"); SUBS=$(j x.submissions <<< "$START")
CA=$(j x.ca <<< "$START"); MAILROOT=$(j x.maildir_root <<< "$START")
read -r -a MPIDS <<< "$(j 'x.pids.join(" ")' <<< "$START")"
for p in "${MPIDS[@]}"; do kill -0 "$p" 2>/dev/null && ok "pid $p alive" || bad "pid $p not alive"; done
expect "CA verifies the server certificate for localhost (openssl)" \
  "$(openssl s_client -connect "127.0.0.1:$IMAPS" -servername localhost -verify_hostname localhost -CAfile "$CA" < /dev/null 2>/dev/null | grep -o 'Verify return code: [0-9]*' | sort -u)" "Verify return code: 0"

echo "# tokens"
TA_JSON=$(user_token "$ISS_A" alice@example.test "$ALL")
TA=$(j x.access_token <<< "$TA_JSON")
expect "alice token claims" "$(j 'const p=jwt(x.access_token); [p.aud,p.upn,p.scope].join(" ")' <<< "$TA_JSON")" \
  "$O alice@example.test $O/IMAP.AccessAsUser.All $O/POP.AccessAsUser.All $O/SMTP.Send"
TG=$(curl -s "$ISS_A/token" -d grant_type=refresh_token -d client_id=native-public \
  -d "refresh_token=$(j x.refresh_token <<< "$TA_JSON")" --data-urlencode "scope=https://graph.test/Mail.Read" | j x.access_token)
expect "graph token from refresh" "$(echo "{\"t\":\"$TG\"}" | j 'jwt(x.t).aud')" "https://graph.test"
TI=$(user_token "$ISS_A" alice@example.test "$O/IMAP.AccessAsUser.All" | j x.access_token)
TBOB=$(user_token "$ISS_A" bob@example.test "$ALL" | j x.access_token)
TC=$(user_token "$ISS_C" alice@example.test "$ALL" | j x.access_token)
TAPP=$(app_token "$ISS_A" "$O/.default")
TAPPG=$(app_token "$ISS_A" "https://graph.test/.default")

# imap_list PORT USER TOKEN [curl args...] -> curl exit code; output in $TMP/out
imap_list() {
  local port=$1 user=$2 tok=$3; shift 3
  curl -sS --max-time 20 --oauth2-bearer "$tok" --cacert "$CA" --user "$user" "$@" "imaps://localhost:$port/" > "$TMP/out" 2> "$TMP/err"
}

echo "# (1) IMAP with alice's token"
curl -sS --max-time 20 --oauth2-bearer "$TA" --cacert "$CA" --user alice@example.test "imaps://localhost:$IMAPS/INBOX" > "$TMP/out" 2> "$TMP/err"
expect "imaps:// INBOX as alice: curl exit 0" "$?" "0"
expect_match "imaps:// lists INBOX" "$(cat "$TMP/out")" 'INBOX'
curl -sS --max-time 20 --oauth2-bearer "$TA" --cacert "$CA" --user alice@example.test --ssl-reqd "imap://localhost:$IMAP/" > "$TMP/out" 2> "$TMP/err"
expect "imap:// STARTTLS port with --ssl-reqd: exit 0" "$?" "0"
python3 "$HERE/probe.py" imap "$IMAPS" "$CA" tls xoauth2 alice@example.test "$TA" oneline > "$TMP/probe" 2>&1
expect "raw IMAP AUTHENTICATE XOAUTH2 one line (SASL-IR, $(echo -n "$TA" | wc -c)-char token) OK" "$?" "0"
python3 "$HERE/probe.py" imap "$IMAP" "$CA" starttls oauthbearer alice@example.test "$TA" twostep > "$TMP/probe" 2>&1
expect "raw IMAP STARTTLS + AUTHENTICATE OAUTHBEARER two-step OK" "$?" "0"
expect_match "login lands in alice's mailbox (SELECT INBOX OK)" "$(grep '^S: b ' "$TMP/probe")" '^S: b OK'

echo "# (2) another user's mailbox"
imap_list "$IMAPS" bob@example.test "$TA"
expect "alice's token with --user bob@example.test: curl 67 (login denied)" "$?" "67"
python3 "$HERE/probe.py" imap "$IMAPS" "$CA" tls xoauth2 bob@example.test "$TA" > "$TMP/probe" 2>&1
expect "raw XOAUTH2 user=bob with alice's token refused" "$?" "1"
expect "XOAUTH2 failure: JSON challenge then NO" "$(grep '^S: [+a] ' "$TMP/probe" | cut -c1-80 | tr '\n' '|')" \
  "S: + eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=|S: a NO [AUTHENTICATIONFAILED] Authentication failed.|"
python3 "$HERE/probe.py" imap "$IMAPS" "$CA" tls oauthbearer bob@example.test "$TA" > "$TMP/probe" 2>&1
expect "raw OAUTHBEARER a=bob with alice's token refused" "$?" "1"
expect "OAUTHBEARER failure: JSON challenge, client sends AQ==, then NO" "$(grep -E '^(S: [+a] |C: AQ==)' "$TMP/probe" | tr '\n' '|')" \
  "S: + eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=|C: AQ==|S: a NO [AUTHENTICATIONFAILED] Authentication failed.|"
imap_list "$IMAPS" bob@example.test "$TBOB"
expect "bob's own token opens bob's mailbox" "$?" "0"

echo "# (3) wrong audience / scope"
imap_list "$IMAPS" alice@example.test "$TG"
expect "graph-audience token refused for IMAP" "$?" "67"
imap_list "$IMAPS" alice@example.test "$TI"
expect "IMAP-only token accepted for IMAP" "$?" "0"
curl -sS --max-time 20 --oauth2-bearer "$TI" --cacert "$CA" --user alice@example.test "pop3s://localhost:$POPS/" > /dev/null 2>&1
expect "IMAP-only token refused for POP (needs POP.AccessAsUser.All)" "$?" "67"
python3 "$HERE/probe.py" smtp "$SUB" "$CA" starttls xoauth2 alice@example.test "$TI" > "$TMP/probe" 2>&1
expect "IMAP-only token refused for submission (needs SMTP.Send)" "$?" "1"
expect "submission failure reply" "$(grep -E '^S: 5' "$TMP/probe")" "S: 535 5.7.8 Authentication failed."
imap_list "$IMAPS" alice@example.test "$TAPPG"
expect "app-only graph token refused for IMAP" "$?" "67"
imap_list "$IMAPS" alice@example.test "$TC"
expect "token from an untrusted issuer (unknown signing key) refused" "$?" "67"
imap_list "$IMAPS" alice@example.test "${TA%?????}AAAAA"
expect "token with a broken signature refused" "$?" "67"

echo "# (4) expiry (issuer B: ACCESS_TOKEN_TTL=2)"
TB=$(user_token "$ISS_B" alice@example.test "$ALL" | j x.access_token)
imap_list "$IMAPS" alice@example.test "$TB"
expect "fresh token from the second trusted issuer accepted" "$?" "0"
sleep 3
imap_list "$IMAPS" alice@example.test "$TB"
expect "the same token 3 s later (expired) refused" "$?" "67"
expect_match "Dovecot logs why" "$(grep -c 'Token has expired' "$RUN/dovecot.log")" '^[1-9]'

echo "# (5) POP3"
curl -sS --max-time 20 --oauth2-bearer "$TA" --cacert "$CA" --user alice@example.test "pop3s://localhost:$POPS/" > "$TMP/out" 2> "$TMP/err"
expect "pop3s:// LIST as alice: exit 0" "$?" "0"
curl -sS --max-time 20 --oauth2-bearer "$TA" --cacert "$CA" --user alice@example.test --ssl-reqd "pop3://localhost:$POP/" > "$TMP/out" 2> "$TMP/err"
expect "pop3:// STLS port with --ssl-reqd: exit 0" "$?" "0"
python3 "$HERE/probe.py" pop3 "$POPS" "$CA" tls xoauth2 alice@example.test "$TA" twostep > "$TMP/probe" 2>&1
expect "raw POP3 AUTH XOAUTH2 two-step OK" "$?" "0"
python3 "$HERE/probe.py" pop3 "$POPS" "$CA" tls xoauth2 alice@example.test "$TA" oneline > "$TMP/probe" 2>&1
POP_ONELINE=$?
echo "# POP3 one-line AUTH XOAUTH2 <$(echo -n "$TA" | wc -c)-char token>: exit $POP_ONELINE, server said: $(grep -E '^S: [-+]' "$TMP/probe" | sed -n 2p)"
python3 "$HERE/probe.py" pop3 "$POP" "$CA" starttls oauthbearer bob@example.test "$TA" > "$TMP/probe" 2>&1
expect "raw POP3 OAUTHBEARER for bob with alice's token refused" "$?" "1"
expect "POP3 failure reply" "$(grep -E '^S: -ERR' "$TMP/probe")" "S: -ERR [AUTH] Authentication failed."

echo "# (6) submission -> Postfix -> LMTP -> Maildir, then IMAP"
SUBJ1="mailoauth selftest $RANDOM-$RANDOM"
printf 'From: alice@example.test\r\nTo: alice@example.test\r\nSubject: %s\r\n\r\nHello from the self-test.\r\n' "$SUBJ1" > "$TMP/msg1.eml"
curl -sS --max-time 20 --oauth2-bearer "$TA" --cacert "$CA" --user alice@example.test "smtp://localhost:$SUB" --ssl-reqd \
  --mail-from alice@example.test --mail-rcpt alice@example.test --upload-file "$TMP/msg1.eml" > "$TMP/out" 2> "$TMP/err"
expect "smtp:// submission STARTTLS send: exit 0" "$?" "0"
SUBJ2="mailoauth selftest smtps $RANDOM-$RANDOM"
printf 'From: alice@example.test\r\nTo: bob@example.test\r\nSubject: %s\r\n\r\nTo bob.\r\n' "$SUBJ2" > "$TMP/msg2.eml"
curl -sS --max-time 20 --oauth2-bearer "$TA" --cacert "$CA" --user alice@example.test "smtps://localhost:$SUBS" \
  --mail-from alice@example.test --mail-rcpt bob@example.test --upload-file "$TMP/msg2.eml" > "$TMP/out" 2> "$TMP/err"
expect "smtps:// submissions (implicit TLS) send to bob: exit 0" "$?" "0"
wait_mail() { # DIR SUBJECT
  for _ in $(seq 100); do grep -rlsF "Subject: $2" "$1" > /dev/null && return 0; sleep 0.1; done; return 1
}
wait_mail "$MAILROOT/alice@example.test/new" "$SUBJ1"
expect "message 1 in $MAILROOT/alice@example.test/new" "$?" "0"
wait_mail "$MAILROOT/bob@example.test/new" "$SUBJ2"
expect "message 2 in bob's Maildir" "$?" "0"
curl -sS --max-time 20 --oauth2-bearer "$TA" --cacert "$CA" --user alice@example.test "imaps://localhost:$IMAPS/INBOX" \
  -X "UID SEARCH SUBJECT \"$SUBJ1\"" > "$TMP/out" 2> "$TMP/err"
UID1=$(grep -o '[0-9]\+' "$TMP/out" | head -n1)
expect_match "IMAP SEARCH finds it" "$UID1" '^[0-9]+$'
curl -sS --max-time 20 --oauth2-bearer "$TA" --cacert "$CA" --user alice@example.test "imaps://localhost:$IMAPS/INBOX;UID=$UID1" > "$TMP/out" 2> "$TMP/err"
expect_match "IMAP FETCH returns it" "$(grep -c "Subject: $SUBJ1" "$TMP/out")" '^1$'
OWNER=$(stat -c %U "$MAILROOT/alice@example.test")
expect "Maildir owned by the single mail uid" "$OWNER" "mailoauth"
python3 "$HERE/probe.py" smtp "$SUB" "$CA" starttls oauthbearer alice@example.test "$TA" twostep > "$TMP/probe" 2>&1
expect "raw submission STARTTLS + AUTH OAUTHBEARER two-step: 235" "$(grep -E '^S: 235' "$TMP/probe")" "S: 235 2.7.0 Logged in."

echo "# (7) passwords are refused"
curl -sS --max-time 20 --cacert "$CA" --user alice@example.test:secret "imaps://localhost:$IMAPS/INBOX" > /dev/null 2>&1
expect "curl imaps:// with a password: 67" "$?" "67"
python3 "$HERE/probe.py" imap "$IMAPS" "$CA" tls login alice@example.test secret > "$TMP/probe" 2>&1
expect "IMAP LOGIN reply" "$(grep '^S: a ' "$TMP/probe")" "S: a NO [AUTHENTICATIONFAILED] Authentication failed."
python3 "$HERE/probe.py" pop3 "$POPS" "$CA" tls user alice@example.test secret > "$TMP/probe" 2>&1
expect "POP3 USER/PASS reply" "$(grep '^S: -ERR' "$TMP/probe")" "S: -ERR [AUTH] Authentication failed."
python3 "$HERE/probe.py" smtp "$SUBS" "$CA" tls plain alice@example.test secret > "$TMP/probe" 2>&1
expect "submission AUTH PLAIN reply" "$(grep -E '^S: 5' "$TMP/probe")" "S: 535 5.7.8 Authentication failed."
python3 "$HERE/probe.py" imap "$IMAPS" "$CA" tls login alice@example.test "$TA" > "$TMP/probe" 2>&1
expect "IMAP LOGIN with the token as password refused too" "$?" "1"

echo "# (8) long one-line AUTH on Dovecot submission"
python3 "$HERE/probe.py" smtp "$SUB" "$CA" starttls xoauth2 alice@example.test "$TA" oneline > "$TMP/probe" 2>&1
LINE=$(awk '/^C: AUTH XOAUTH2 /{f=1; next} f && /^S: /{print; exit}' "$TMP/probe")
expect "one-line AUTH XOAUTH2 <$(grep -o 'AUTH XOAUTH2 .*chars' "$TMP/probe" | grep -o '[0-9]* chars')> -> 500 Line too long" "$LINE" "S: 500 5.5.2 Line too long"
python3 "$HERE/probe.py" smtp "$SUBS" "$CA" tls xoauth2 alice@example.test "$TA" twostep > "$TMP/probe" 2>&1
expect "two-step AUTH XOAUTH2 (334, then the base64 line) -> 235" "$(grep -E '^S: 235' "$TMP/probe")" "S: 235 2.7.0 Logged in."
LIMIT=$(python3 - "$SUBS" "$CA" <<'EOF'
# bisect the longest "AUTH XOAUTH2 <x>" line (without CRLF) not refused with "500 5.5.2 Line too long"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
def refused(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10), server_hostname="localhost")
    f = s.makefile("rb")
    def reply():
        while True:
            l = f.readline().decode().rstrip()
            if len(l) < 4 or l[3] != "-":
                return l
    reply(); s.sendall(b"EHLO x\r\n"); reply()
    s.sendall(("AUTH XOAUTH2 " + "A" * (n - 13) + "\r\n").encode())
    r = reply(); s.close()
    return r.startswith("500 5.5.2")
lo, hi = 100, 4000
while hi - lo > 1:
    m = (lo + hi) // 2
    lo, hi = (lo, m) if refused(m) else (m, hi)
print(lo)
EOF
)
expect "longest one-line AUTH command Dovecot submission accepts (octets, without CRLF)" "$LIMIT" "1030"

echo "# (9) app-only (client credentials) tokens, user= any mailbox"
python3 "$HERE/probe.py" imap "$IMAPS" "$CA" tls xoauth2 carol@example.test "$TAPP" > "$TMP/probe" 2>&1
expect "IMAP XOAUTH2 user=carol with an app-only outlook token" "$?" "0"
curl -sS --max-time 20 --oauth2-bearer "$TAPP" --cacert "$CA" --user carol@example.test "pop3s://localhost:$POPS/" > /dev/null 2>&1
expect "POP with the app-only token" "$?" "0"
python3 "$HERE/probe.py" smtp "$SUBS" "$CA" tls xoauth2 carol@example.test "$TAPP" > "$TMP/probe" 2>&1
expect "submission with the app-only token" "$?" "0"

echo "# (10) failures are fast (no auth penalty)"
T0=$(date +%s%N)
for _ in 1 2 3 4; do imap_list "$IMAPS" bob@example.test "$TA"; done
MS=$(( ($(date +%s%N) - T0) / 1000000 ))
if [ "$MS" -lt 6000 ]; then ok "4 refused logins in a row took ${MS} ms"; else bad "4 refused logins took ${MS} ms (auth penalty active?)"; fi
imap_list "$IMAPS" alice@example.test "$TA"
expect "a good login right after failures works" "$?" "0"

echo "# (11) concurrency: 15 parallel IMAP logins of one user (default limit would be 10)"
cat > "$TMP/par.py" <<'EOF'
import base64, socket, ssl, sys, threading
port, ca, user, tok = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
conns, lock, results = [], threading.Lock(), []
def one():
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname="localhost")
    f = s.makefile("rb"); f.readline()
    ir = base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (user, tok)).encode()).decode()
    s.sendall(("a AUTHENTICATE XOAUTH2 %s\r\n" % ir).encode())
    while True:
        l = f.readline().decode()
        if l.startswith("a "):
            break
    with lock:
        results.append(l.startswith("a OK")); conns.append(s)
ts = [threading.Thread(target=one) for _ in range(15)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sum(results))
EOF
expect "15 simultaneous sessions all logged in" "$(python3 "$TMP/par.py" "$IMAPS" "$CA" alice@example.test "$TA")" "15"

echo "# (12) stop.sh"
expect "oauth servers tracked for cleanup" "${#PIDS[@]}" "3"
bash "$HERE/stop.sh" "$RUN"
expect "stop.sh exits 0" "$?" "0"
sleep 0.3
ALIVE=0; for p in "${MPIDS[@]}"; do kill -0 "$p" 2>/dev/null && ALIVE=1; done
expect "recorded PIDs are gone" "$ALIVE" "0"
(exec 3<>"/dev/tcp/127.0.0.1/$IMAPS") 2>/dev/null
expect "IMAPS port closed" "$?" "1"
LEFT=$(pgrep -fc "$RUN/|dovecot-mailoauth-$IMAP/")
expect "no process of the instance left" "$LEFT" "0"

if [ "$FAILED" -gt 0 ]; then
  echo "# dovecot.log (last lines):"; tail -n 15 "$RUN/dovecot.log" | sed 's/^/#   /'
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
