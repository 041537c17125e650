#!/usr/bin/env bash
# Self-test of the test OAuth server and the scripted browser (curl + node + openssl, no cargo).
#   bash tests/oauth-server/selftest.sh
# Prints "ok - ..." / "not ok - ..." lines and a final "N passed, N failed"; exit 1 on failure.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
if [ ! -d node_modules/oidc-provider ]; then
  npm ci --no-audit --no-fund >&2 || exit 1
fi

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null
  if [ "${KEEP_TMP:-}" = 1 ]; then echo "# kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

source "$HERE/../tap.sh"

# j EXPR: evaluate a JS expression over the JSON on stdin (bound to x). Helpers:
# jwt(t) = JWT payload, hdr(t) = JWT header. Strings print raw, other values as JSON.
j() {
  node -e '
    let s = "";
    process.stdin.on("data", (d) => { s += d; }).on("end", () => {
      const x = s.trim() ? JSON.parse(s) : undefined;
      const part = (t, i) => JSON.parse(Buffer.from(String(t).split(".")[i], "base64url"));
      const jwt = (t) => part(t, 1);
      const hdr = (t) => part(t, 0);
      const v = eval(process.argv[1]);
      console.log(typeof v === "string" ? v : JSON.stringify(v));
    });' -- "$1"
}

urlenc() { node -e 'console.log(encodeURIComponent(process.argv[1]))' -- "$1"; }

# ---------------------------------------------------------------------------
# fixtures: app certificate, loopback TLS certificate, loopback listener
# ---------------------------------------------------------------------------

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/app-key.pem" -out "$TMP/app-cert.pem" \
  -subj /CN=app-cert -days 2 2>/dev/null || { echo "openssl failed"; exit 1; }
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/tls-key.pem" -out "$TMP/tls-cert.pem" \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -days 2 2>/dev/null \
  || { echo "openssl failed"; exit 1; }

cat > "$TMP/listener.mjs" <<'EOF'
// Stand-in for the program's redirect listener: logs each request URL, answers 200.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
const [mode, logfile, key, cert] = process.argv.slice(2);
const handler = (req, res) => {
  fs.appendFileSync(logfile, `${req.url}\n`);
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('Signed in. You can close this window.');
};
const srv = mode === 'https'
  ? https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, handler)
  : http.createServer(handler);
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
EOF

# start_listener http|https NAME -> sets LPORT, log in $TMP/NAME.log
start_listener() {
  local out="$TMP/$2.port"
  : > "$TMP/$2.log"
  node "$TMP/listener.mjs" "$1" "$TMP/$2.log" "$TMP/tls-key.pem" "$TMP/tls-cert.pem" > "$out" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
  LPORT=$(head -n1 "$out")
}

# start_server [VAR=value ...] -> sets SERVER_PID, ISSUER
start_server() {
  local out="$TMP/server.$RANDOM.out"
  env "$@" node "$HERE/server.mjs" > "$out" 2>> "$TMP/server.err" &
  SERVER_PID=$!
  PIDS+=($SERVER_PID)
  for _ in $(seq 200); do [ -s "$out" ] && break; sleep 0.05; done
  ISSUER=$(j x.issuer < "$out")
  STARTLINE=$(cat "$out")
}

# pkce -> sets VERIFIER, CHALLENGE
pkce() {
  VERIFIER=$(node -e 'console.log(require("crypto").randomBytes(32).toString("base64url"))')
  CHALLENGE=$(node -e 'console.log(require("crypto").createHash("sha256").update(process.argv[1]).digest("base64url"))' -- "$VERIFIER")
}

token() { curl -s "$ISSUER/token" "$@"; }
# token_status: prints the body, then the HTTP status on its own last line
token_status() { curl -s -w '\n%{http_code}' "$ISSUER/token" "$@"; }

# verify JWT signature against the server's JWKS: prints "valid" or "invalid"
verify_jwt() {
  curl -s "$ISSUER/jwks" | node -e '
    const crypto = require("crypto");
    let s = ""; process.stdin.on("data", (d) => { s += d; }).on("end", () => {
      const jwks = JSON.parse(s); const t = process.argv[1].split(".");
      const h = JSON.parse(Buffer.from(t[0], "base64url"));
      const jwk = jwks.keys.find((k) => k.kid === h.kid);
      if (!jwk || h.alg !== "RS256") { console.log("invalid"); return; }
      const ok = crypto.verify("RSA-SHA256", Buffer.from(`${t[0]}.${t[1]}`),
        crypto.createPublicKey({ key: jwk, format: "jwk" }), Buffer.from(t[2], "base64url"));
      console.log(ok ? "valid" : "invalid");
    });' -- "$1"
}

# ---------------------------------------------------------------------------
echo "# starting server"
start_server APP_CERT_PEM="$TMP/app-cert.pem"
expect_match "startup line is the issuer JSON" "$STARTLINE" '^\{"issuer":"http://127\.0\.0\.1:[0-9]+","port":[0-9]+\}$'
DISC=$(curl -s "$ISSUER/.well-known/openid-configuration")
expect "discovery token_endpoint" "$(j x.token_endpoint <<< "$DISC")" "$ISSUER/token"
expect "discovery device endpoint" "$(j x.device_authorization_endpoint <<< "$DISC")" "$ISSUER/device/auth"
expect "discovery revocation endpoint" "$(j x.revocation_endpoint <<< "$DISC")" "$ISSUER/token/revocation"
expect "discovery introspection endpoint" "$(j x.introspection_endpoint <<< "$DISC")" "$ISSUER/token/introspection"
expect "discovery jwks_uri" "$(j x.jwks_uri <<< "$DISC")" "$ISSUER/jwks"
curl -s -X POST "$ISSUER/test/reset-stats" > /dev/null

# ---------------------------------------------------------------------------
echo "# (1) authorization code + PKCE S256, public client, http loopback on a random port"
start_listener http cb1
REDIR="http://127.0.0.1:$LPORT/callback"
pkce
SCOPE="openid email offline_access https://outlook.test/IMAP.AccessAsUser.All https://outlook.test/SMTP.Send"
AUTH_URL="$ISSUER/auth?client_id=native-public&response_type=code&redirect_uri=$(urlenc "$REDIR")&scope=$(urlenc "$SCOPE")&state=st1&code_challenge=$CHALLENGE&code_challenge_method=S256&login_hint=$(urlenc bob@example.test)"
OUT=$(node browser.mjs "$AUTH_URL" 2> "$TMP/browser1.err")
expect "browser exit status 0 and final status 200" "$?:$(sed -n 2p <<< "$OUT")" "0:200"
CB=$(head -n1 "$TMP/cb1.log")
expect_match "listener got code, state and iss" "$CB" "^/callback\?code=[^&]+&state=st1&iss="
CODE=$(node -e 'console.log(new URLSearchParams(process.argv[1].split("?")[1]).get("code"))' -- "$CB")
T1=$(token -d grant_type=authorization_code -d client_id=native-public -d "code=$CODE" \
  -d "code_verifier=$VERIFIER" --data-urlencode "redirect_uri=$REDIR")
expect "token response has access, refresh and id tokens" \
  "$(j '[!!x.access_token, !!x.refresh_token, !!x.id_token, x.token_type].join(",")' <<< "$T1")" "true,true,true,Bearer"
AT=$(j x.access_token <<< "$T1")
expect "access token header alg RS256 typ JWT" "$(j '[hdr(x.access_token).alg, hdr(x.access_token).typ].join(" ")' <<< "$T1")" "RS256 JWT"
expect "access token aud is outlook (string)" "$(j 'JSON.stringify(jwt(x.access_token).aud)' <<< "$T1")" '"https://outlook.test"'
expect "access token scope space-separated" "$(j 'jwt(x.access_token).scope' <<< "$T1")" "https://outlook.test/IMAP.AccessAsUser.All https://outlook.test/SMTP.Send"
expect "access token upn/sub/client_id" "$(j 'const p=jwt(x.access_token); [p.upn,p.sub,p.client_id,p.iss].join(" ")' <<< "$T1")" "bob@example.test bob@example.test native-public $ISSUER"
expect "access token exp-iat = 3600 and expires_in = 3600" "$(j 'const p=jwt(x.access_token); (p.exp-p.iat)+" "+x.expires_in' <<< "$T1")" "3600 3600"
expect "access token signature verifies against /jwks" "$(verify_jwt "$AT")" "valid"
expect "id_token carries email" "$(j 'jwt(x.id_token).email' <<< "$T1")" "bob@example.test"

echo "# (1b) PKCE enforcement for the public client"
: > "$TMP/cb1.log"
node browser.mjs "$ISSUER/auth?client_id=native-public&response_type=code&redirect_uri=$(urlenc "$REDIR")&scope=openid&state=st2" > /dev/null 2>&1
expect_match "missing code_challenge -> error redirect" "$(head -n1 "$TMP/cb1.log")" "error=invalid_request"
: > "$TMP/cb1.log"
pkce
node browser.mjs "$ISSUER/auth?client_id=native-public&response_type=code&redirect_uri=$(urlenc "$REDIR")&scope=$(urlenc "openid https://outlook.test/IMAP.AccessAsUser.All")&state=st3&code_challenge=$CHALLENGE&code_challenge_method=S256" > /dev/null 2>&1
CODE=$(node -e 'console.log(new URLSearchParams(process.argv[1].split("?")[1]).get("code"))' -- "$(head -n1 "$TMP/cb1.log")")
R=$(token_status -d grant_type=authorization_code -d client_id=native-public -d "code=$CODE" \
  -d "code_verifier=wrong-verifier-wrong-verifier-wrong-verifier-123" --data-urlencode "redirect_uri=$REDIR")
expect "wrong code_verifier -> 400 invalid_grant" "$(tail -n1 <<< "$R") $(head -n1 <<< "$R" | j x.error)" "400 invalid_grant"
expect "error body shape is {error, error_description}" "$(head -n1 <<< "$R" | j 'Object.keys(x).sort().join(",")')" "error,error_description"
TB=$(token -d grant_type=authorization_code -d client_id=native-public -d "code=$CODE" -d "code_verifier=$VERIFIER" --data-urlencode "redirect_uri=$REDIR")
expect "same code with the right verifier still works" "$(j '!!x.access_token' <<< "$TB")" "true"
expect "code cannot be redeemed twice" "$(token -d grant_type=authorization_code -d client_id=native-public -d "code=$CODE" \
  -d "code_verifier=$VERIFIER" --data-urlencode "redirect_uri=$REDIR" | j x.error)" "invalid_grant"

echo "# (1c) confidential client over https://localhost:<random port> with a self-signed listener"
start_listener https cb2
REDIR2="https://localhost:$LPORT/callback"
OUT=$(node browser.mjs "$ISSUER/auth?client_id=confidential&response_type=code&redirect_uri=$(urlenc "$REDIR2")&scope=$(urlenc "openid email offline_access https://outlook.test/IMAP.AccessAsUser.All")&state=st4&prompt=consent" 2> "$TMP/browser2.err")
expect "https loopback redirect reached, 200" "$?:$(sed -n 2p <<< "$OUT")" "0:200"
CODE=$(node -e 'console.log(new URLSearchParams(process.argv[1].split("?")[1]).get("code"))' -- "$(head -n1 "$TMP/cb2.log")")
T2=$(token -u confidential:test-secret -d grant_type=authorization_code -d "code=$CODE" --data-urlencode "redirect_uri=$REDIR2")
expect "client_secret_basic code exchange; default user alice" "$(j '[!!x.refresh_token, jwt(x.access_token).upn].join(" ")' <<< "$T2")" "true alice@example.test"
RT=$(j x.refresh_token <<< "$T2")
RC=$(token -d grant_type=refresh_token -d client_id=confidential -d client_secret=test-secret -d "refresh_token=$RT")
expect "client_secret_post refresh" "$(j '!!x.access_token' <<< "$RC")" "true"
RTC=$(j x.refresh_token <<< "$RC")
start_listener https cb3
: > "$TMP/cb3.log"
pkce
OUT=$(node browser.mjs "$ISSUER/auth?client_id=native-public&response_type=code&redirect_uri=$(urlenc "https://127.0.0.1:$LPORT/callback")&scope=$(urlenc "https://outlook.test/IMAP.AccessAsUser.All")&state=st7&code_challenge=$CHALLENGE&code_challenge_method=S256" 2>/dev/null)
expect "https://127.0.0.1:<random port> redirect for the public client" "$?:$(sed -n 2p <<< "$OUT"):$(grep -c 'code=' "$TMP/cb3.log")" "0:200:1"
R=$(token_status -d grant_type=refresh_token -d client_id=confidential -d client_secret=wrong -d "refresh_token=$RT")
expect "wrong client secret -> 401 invalid_client" "$(tail -n1 <<< "$R") $(head -n1 <<< "$R" | j x.error)" "401 invalid_client"
: > "$TMP/cb2.log"
node browser.mjs "$ISSUER/auth?client_id=confidential&response_type=code&redirect_uri=$(urlenc "https://localhost:$LPORT/other")&scope=openid&state=st5" > /dev/null 2>&1
expect "unregistered redirect path is refused (no redirect)" "$(wc -l < "$TMP/cb2.log" | tr -d ' ')" "0"

# ---------------------------------------------------------------------------
echo "# (2)+(3) refresh rotation, other-resource refresh, replay detection"
RT0=$(j x.refresh_token <<< "$T1")
R1=$(token -d grant_type=refresh_token -d client_id=native-public -d "refresh_token=$RT0")
RT1=$(j x.refresh_token <<< "$R1")
expect "refresh 1 gives new access token for outlook" "$(j 'jwt(x.access_token).aud' <<< "$R1")" "https://outlook.test"
if [ -n "$RT1" ] && [ "$RT1" != "$RT0" ]; then ok "refresh 1 rotated the refresh token"; else bad "refresh 1 did not rotate"; fi
R2=$(token -d grant_type=refresh_token -d client_id=native-public -d "refresh_token=$RT1" --data-urlencode "scope=https://graph.test/Mail.Read")
RT2=$(j x.refresh_token <<< "$R2")
expect "refresh 2 with graph scope gives aud https://graph.test" "$(j 'const p=jwt(x.access_token); p.aud+" "+p.scope+" "+p.upn' <<< "$R2")" "https://graph.test https://graph.test/Mail.Read bob@example.test"
if [ -n "$RT2" ] && [ "$RT2" != "$RT1" ]; then ok "refresh 2 rotated the refresh token"; else bad "refresh 2 did not rotate"; fi
R3=$(token -d grant_type=refresh_token -d client_id=native-public -d "refresh_token=$RT2")
RT3=$(j x.refresh_token <<< "$R3")
expect "refresh 3 without scope is back to outlook with the original scopes" "$(j 'const p=jwt(x.access_token); p.aud+" "+p.scope' <<< "$R3")" "https://outlook.test https://outlook.test/IMAP.AccessAsUser.All https://outlook.test/SMTP.Send"
R=$(token_status -d grant_type=refresh_token -d client_id=native-public -d "refresh_token=$RT0")
expect "replaying the first refresh token -> 400 invalid_grant" "$(tail -n1 <<< "$R") $(head -n1 <<< "$R" | j x.error)" "400 invalid_grant"
expect "replay revoked the whole grant (latest refresh token dead too)" "$(token -d grant_type=refresh_token -d client_id=native-public -d "refresh_token=$RT3" | j x.error)" "invalid_grant"
expect "unknown scope at refresh -> invalid_scope" "$(token -d grant_type=refresh_token -d client_id=confidential -d client_secret=test-secret -d "refresh_token=$RTC" --data-urlencode "scope=https://outlook.test/Bogus" | j x.error)" "invalid_scope"
expect "refresh token still usable after invalid_scope" "$(token -d grant_type=refresh_token -d client_id=confidential -d client_secret=test-secret -d "refresh_token=$RTC" | j '!!x.refresh_token')" "true"

echo "# revocation and introspection of a refresh token"
: > "$TMP/cb2.log"
node browser.mjs "$ISSUER/auth?client_id=confidential&response_type=code&redirect_uri=$(urlenc "$REDIR2")&scope=$(urlenc "offline_access https://outlook.test/IMAP.AccessAsUser.All")&state=st6" > /dev/null 2>&1
CODE=$(node -e 'console.log(new URLSearchParams(process.argv[1].split("?")[1]).get("code"))' -- "$(head -n1 "$TMP/cb2.log")")
RTX=$(token -u confidential:test-secret -d grant_type=authorization_code -d "code=$CODE" --data-urlencode "redirect_uri=$REDIR2" | j x.refresh_token)
expect "introspection: refresh token active" "$(curl -s -u confidential:test-secret "$ISSUER/token/introspection" -d "token=$RTX" | j x.active)" "true"
expect "revocation answers 200" "$(curl -s -o /dev/null -w '%{http_code}' -u confidential:test-secret "$ISSUER/token/revocation" -d "token=$RTX" -d token_type_hint=refresh_token)" "200"
expect "introspection: revoked refresh token inactive" "$(curl -s -u confidential:test-secret "$ISSUER/token/introspection" -d "token=$RTX" | j x.active)" "false"
expect "revoked refresh token -> invalid_grant" "$(token -u confidential:test-secret -d grant_type=refresh_token -d "refresh_token=$RTX" | j x.error)" "invalid_grant"

# ---------------------------------------------------------------------------
echo "# (4) device authorization grant"
DEV=urn:ietf:params:oauth:grant-type:device_code
DA=$(curl -s "$ISSUER/device/auth" -d client_id=native-public --data-urlencode "scope=openid email offline_access https://outlook.test/IMAP.AccessAsUser.All")
expect "device response fields" "$(j '[x.verification_uri, x.interval, x.expires_in, /^[A-Z]{4}-[A-Z]{4}$/.test(x.user_code)].join(" ")' <<< "$DA")" "$ISSUER/device 1 900 true"
DC=$(j x.device_code <<< "$DA"); UC=$(j x.user_code <<< "$DA")
expect "first poll -> authorization_pending" "$(token -d grant_type=$DEV -d client_id=native-public -d "device_code=$DC" | j x.error)" "authorization_pending"
R=$(token_status -d grant_type=$DEV -d client_id=native-public -d "device_code=$DC")
expect "immediate second poll -> 400 slow_down" "$(tail -n1 <<< "$R") $(head -n1 <<< "$R" | j x.error)" "400 slow_down"
node browser.mjs --device "$ISSUER" "$UC" > /dev/null 2> "$TMP/browser3.err"
expect "browser.mjs --device exit 0" "$?" "0"
sleep 1.2
expect "poll after 1s (interval now 6) -> slow_down again" "$(token -d grant_type=$DEV -d client_id=native-public -d "device_code=$DC" | j x.error)" "slow_down"
sleep 11.1
TD=$(token -d grant_type=$DEV -d client_id=native-public -d "device_code=$DC")
expect "poll after backing off -> tokens incl. refresh token" "$(j '[jwt(x.access_token).aud, jwt(x.access_token).upn, !!x.refresh_token, jwt(x.id_token).email].join(" ")' <<< "$TD")" "https://outlook.test alice@example.test true alice@example.test"
expect "device code is single use" "$(token -d grant_type=$DEV -d client_id=native-public -d "device_code=$DC" | j x.error)" "invalid_grant"

DA=$(curl -s "$ISSUER/device/auth" -d client_id=native-public --data-urlencode "scope=https://outlook.test/IMAP.AccessAsUser.All")
DC=$(j x.device_code <<< "$DA"); UC=$(j x.user_code <<< "$DA")
node browser.mjs --device "$ISSUER" "$UC" --deny > /dev/null 2> "$TMP/browser4.err"
expect "browser.mjs --device --deny exit 0" "$?" "0"
R=$(token_status -d grant_type=$DEV -d client_id=native-public -d "device_code=$DC")
expect "denied device code -> 400 access_denied" "$(tail -n1 <<< "$R") $(head -n1 <<< "$R" | j x.error)" "400 access_denied"
node browser.mjs --device "$ISSUER" "WRONG-CODE" > /dev/null 2>&1
expect "browser.mjs --device with a wrong code exits 1" "$?" "1"

# ---------------------------------------------------------------------------
echo "# (5) client credentials with a secret"
CC=$(token -d grant_type=client_credentials -d client_id=app-secret -d client_secret=app-secret-value --data-urlencode "scope=https://outlook.test/.default")
expect "app-secret token: typ JWT, aud outlook" "$(j '[hdr(x.access_token).typ, jwt(x.access_token).aud, x.token_type, !!x.refresh_token].join(" ")' <<< "$CC")" "JWT https://outlook.test Bearer false"
expect "app-secret token claims" "$(j 'const p=jwt(x.access_token); [p.sub,p.client_id,p.scope,p.roles,p.upn===undefined].join("|")' <<< "$CC")" "app-secret|app-secret|https://outlook.test/.default|IMAP.AccessAsApp POP.AccessAsApp SMTP.SendAsApp|true"
expect "app-secret token signature" "$(verify_jwt "$(j x.access_token <<< "$CC")")" "valid"
expect "app-secret via client_secret_basic, graph" "$(token -u app-secret:app-secret-value -d grant_type=client_credentials --data-urlencode "scope=https://graph.test/.default" | j 'jwt(x.access_token).aud+" "+jwt(x.access_token).roles')" "https://graph.test Mail.Read"
expect "app-only client asking a delegated scope -> invalid_scope" "$(token -d grant_type=client_credentials -d client_id=app-secret -d client_secret=app-secret-value --data-urlencode "scope=https://outlook.test/IMAP.AccessAsUser.All" | j x.error)" "invalid_scope"
expect "app-secret wrong secret -> invalid_client" "$(token -d grant_type=client_credentials -d client_id=app-secret -d client_secret=nope --data-urlencode "scope=https://outlook.test/.default" | j x.error)" "invalid_client"
expect "public client may not use client_credentials (oidc-provider says invalid_request)" "$(token -d grant_type=client_credentials -d client_id=native-public --data-urlencode "scope=https://outlook.test/.default" | j x.error)" "invalid_request"

# ---------------------------------------------------------------------------
echo "# (6) client credentials with a certificate (private_key_jwt, x5t#S256, no kid)"
cat > "$TMP/assertion.mjs" <<'EOF'
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
const [alg, keyFile, certFile, aud, clientId, kid] = process.argv.slice(2);
const cert = new crypto.X509Certificate(fs.readFileSync(certFile));
const header = { alg, typ: 'JWT', 'x5t#S256': crypto.hash('sha256', cert.raw, 'base64url') };
if (kid) header.kid = kid;
const now = Math.floor(Date.now() / 1000);
const payload = { aud, iss: clientId, sub: clientId, jti: crypto.randomUUID(), nbf: now, iat: now, exp: now + 600 };
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const input = `${b64(header)}.${b64(payload)}`;
const key = crypto.createPrivateKey(fs.readFileSync(keyFile));
const sig = alg === 'PS256'
  ? crypto.sign('sha256', Buffer.from(input), { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 })
  : crypto.sign('sha256', Buffer.from(input), key);
console.log(`${input}.${sig.toString('base64url')}`);
EOF
JB=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
for ALG in PS256 RS256; do
  A=$(node "$TMP/assertion.mjs" $ALG "$TMP/app-key.pem" "$TMP/app-cert.pem" "$ISSUER/token" app-cert)
  R=$(token -d grant_type=client_credentials -d client_id=app-cert -d client_assertion_type=$JB -d "client_assertion=$A" --data-urlencode "scope=https://outlook.test/.default")
  expect "app-cert $ALG assertion -> outlook JWT" "$(j '[hdr(x.access_token).typ, jwt(x.access_token).aud, jwt(x.access_token).sub].join(" ")' <<< "$R")" "JWT https://outlook.test app-cert"
done
expect "replayed assertion -> invalid_client" "$(token -d grant_type=client_credentials -d client_id=app-cert -d client_assertion_type=$JB -d "client_assertion=$A" --data-urlencode "scope=https://outlook.test/.default" | j x.error)" "invalid_client"
KID=$(node -e 'const c=require("crypto");console.log(c.hash("sha256",new c.X509Certificate(require("fs").readFileSync(process.argv[1])).raw,"base64url"))' -- "$TMP/app-cert.pem")
A=$(node "$TMP/assertion.mjs" PS256 "$TMP/app-key.pem" "$TMP/app-cert.pem" "$ISSUER/token" app-cert "$KID")
expect "app-cert assertion with kid = x5t#S256 also accepted" "$(token -d grant_type=client_credentials -d client_id=app-cert -d client_assertion_type=$JB -d "client_assertion=$A" --data-urlencode "scope=https://outlook.test/.default" | j 'jwt(x.access_token).aud')" "https://outlook.test"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/other-key.pem" -out "$TMP/other-cert.pem" -subj /CN=other -days 2 2>/dev/null
A=$(node "$TMP/assertion.mjs" PS256 "$TMP/other-key.pem" "$TMP/other-cert.pem" "$ISSUER/token" app-cert)
expect "assertion signed by another key -> invalid_client" "$(token -d grant_type=client_credentials -d client_id=app-cert -d client_assertion_type=$JB -d "client_assertion=$A" --data-urlencode "scope=https://outlook.test/.default" | j x.error)" "invalid_client"

# ---------------------------------------------------------------------------
echo "# (7) /test/stats"
S=$(curl -s "$ISSUER/test/stats")
TOTAL=$(j x.token_requests <<< "$S")
SUM=$(j 'Object.values(x.by_grant_type).reduce((a,b)=>a+b,0)' <<< "$S")
expect "stats total equals the per-grant sum" "$TOTAL" "$SUM"
expect_match "stats counted many token requests" "$TOTAL" '^[3-9][0-9]$'
expect "stats by grant type (device polls: 5 + 1 denied)" "$(j '[x.by_grant_type["urn:ietf:params:oauth:grant-type:device_code"], x.by_grant_type.client_credentials>0, x.by_grant_type.refresh_token>0, x.by_grant_type.authorization_code>0].join(" ")' <<< "$S")" "6 true true true"
curl -s -X POST "$ISSUER/test/reset-stats" > /dev/null
token -d grant_type=refresh_token -d client_id=native-public -d refresh_token=nope > /dev/null
token -d client_id=native-public > /dev/null
expect "stats after reset count failing requests too" "$(curl -s "$ISSUER/test/stats")" '{"token_requests":2,"by_grant_type":{"refresh_token":1,"(none)":1}}'
expect "/test/signing-key kid matches /jwks" "$(curl -s "$ISSUER/test/signing-key" | j x.kid)" "$(curl -s "$ISSUER/jwks" | j 'x.keys[0].kid')"

kill -TERM "$SERVER_PID"; wait "$SERVER_PID"
expect "server exits 0 on SIGTERM" "$?" "0"

# ---------------------------------------------------------------------------
echo "# second server: LOGIN_AS, ACCESS_TOKEN_TTL, DEVICE_INTERVAL, TOKEN_DELAY_MS, STRICT_OFFLINE_ACCESS"
start_server LOGIN_AS=carol@example.test ACCESS_TOKEN_TTL=120 DEVICE_INTERVAL=3 TOKEN_DELAY_MS=400 STRICT_OFFLINE_ACCESS=1
A=$(node "$TMP/assertion.mjs" PS256 "$TMP/app-key.pem" "$TMP/app-cert.pem" "$ISSUER/token" app-cert)
expect "app-cert client absent without APP_CERT_PEM" "$(token -d grant_type=client_credentials -d client_id=app-cert -d client_assertion_type=$JB -d "client_assertion=$A" --data-urlencode "scope=https://outlook.test/.default" | j x.error)" "invalid_client"
: > "$TMP/cb1.log"
pkce
node browser.mjs "$ISSUER/auth?client_id=native-public&response_type=code&redirect_uri=$(urlenc "$REDIR")&scope=$(urlenc "openid email offline_access https://outlook.test/IMAP.AccessAsUser.All")&state=s&code_challenge=$CHALLENGE&code_challenge_method=S256&login_hint=$(urlenc bob@example.test)" > /dev/null 2>&1
CODE=$(node -e 'console.log(new URLSearchParams(process.argv[1].split("?")[1]).get("code"))' -- "$(head -n1 "$TMP/cb1.log")")
START=$(date +%s%N)
T=$(token -d grant_type=authorization_code -d client_id=native-public -d "code=$CODE" -d "code_verifier=$VERIFIER" --data-urlencode "redirect_uri=$REDIR")
MS=$(( ($(date +%s%N) - START) / 1000000 ))
expect "LOGIN_AS overrides login_hint (upn, id_token email)" "$(j 'jwt(x.access_token).upn+" "+jwt(x.id_token).email' <<< "$T")" "carol@example.test carol@example.test"
expect "ACCESS_TOKEN_TTL=120" "$(j 'x.expires_in+" "+(jwt(x.access_token).exp-jwt(x.access_token).iat)' <<< "$T")" "120 120"
expect "STRICT_OFFLINE_ACCESS: no prompt=consent -> no refresh token" "$(j '!!x.refresh_token' <<< "$T")" "false"
if [ "$MS" -ge 400 ]; then ok "TOKEN_DELAY_MS delays the token endpoint (${MS} ms)"; else bad "TOKEN_DELAY_MS not applied (${MS} ms)"; fi
: > "$TMP/cb1.log"
pkce
node browser.mjs "$ISSUER/auth?client_id=native-public&response_type=code&redirect_uri=$(urlenc "$REDIR")&scope=$(urlenc "openid offline_access https://outlook.test/IMAP.AccessAsUser.All")&state=s&prompt=consent&code_challenge=$CHALLENGE&code_challenge_method=S256" > /dev/null 2>&1
CODE=$(node -e 'console.log(new URLSearchParams(process.argv[1].split("?")[1]).get("code"))' -- "$(head -n1 "$TMP/cb1.log")")
T=$(token -d grant_type=authorization_code -d client_id=native-public -d "code=$CODE" -d "code_verifier=$VERIFIER" --data-urlencode "redirect_uri=$REDIR")
expect "STRICT_OFFLINE_ACCESS: prompt=consent -> refresh token" "$(j '!!x.refresh_token' <<< "$T")" "true"
RTS=$(j x.refresh_token <<< "$T")
token -d grant_type=refresh_token -d client_id=native-public -d "refresh_token=$RTS" -o "$TMP/race1.json" -w '%{http_code}\n' > "$TMP/race1.status" &
P1=$!
token -d grant_type=refresh_token -d client_id=native-public -d "refresh_token=$RTS" -o "$TMP/race2.json" -w '%{http_code}\n' > "$TMP/race2.status" &
P2=$!
wait $P1 $P2
expect "two concurrent refreshes with one refresh token: one wins, one is a replay" "$(cat "$TMP/race1.status" "$TMP/race2.status" | sort | tr '\n' ' ')" "200 400 "
expect "DEVICE_INTERVAL=3" "$(curl -s "$ISSUER/device/auth" -d client_id=native-public --data-urlencode "scope=https://outlook.test/IMAP.AccessAsUser.All" | j x.interval)" "3"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID"
expect "second server exits 0 on SIGTERM" "$?" "0"

echo "# server stderr (last lines):"
tail -n 5 "$TMP/server.err" | sed 's/^/#   /'
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
