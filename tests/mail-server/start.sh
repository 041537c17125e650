#!/usr/bin/env bash
# Start a private Dovecot (IMAP, POP3, submission, LMTP) + Postfix (relay for submission)
# whose only authentication is OAuth2 (XOAUTH2 / OAUTHBEARER) with JWTs from the test
# OAuth server (tests/oauth-server/server.mjs), validated locally by Dovecot.
#
#   bash tests/mail-server/start.sh RUNDIR ISSUER [ISSUER...]
#
# RUNDIR: a directory for this instance (created if missing; its parents must be
#         traversable by other users, e.g. under /tmp). ISSUER: http://127.0.0.1:PORT of a
#         running oauth server; tokens of every ISSUER given are accepted (each iss checked,
#         each server's signing key installed). Needs root and the packages of install.sh.
# On success prints ONE JSON line on stdout and exits 0 with the daemons left running:
#   {"imap_tls":N,"imap":N,"pop_tls":N,"pop":N,"submission":N,"submissions":N,"smtp_relay":N,
#    "ca":"RUNDIR/ca.pem","maildir_root":"RUNDIR/mail","key_dir":"RUNDIR/keys","log":"...",
#    "pids":[dovecot_master,postfix_master]}
# Stop with: bash tests/mail-server/stop.sh RUNDIR
# Environment: MAILSERVER_UID_USER (default mailoauth; created if missing), MAILSERVER_DEBUG=1 (auth_debug),
#              START_TIMEOUT (seconds, default 30), MAILSERVER_MAIL_LAYOUT=fs (folders as plain
#              directories, so a folder name may hold a dot), MAILSERVER_CERT + MAILSERVER_KEY (PEM files: Dovecot
#              serves this certificate (chain) and key instead of the generated leaf; "ca" stays the
#              generated CA, which then vouches for nothing), MAILSERVER_CONNECTIONS (IMAP connections
#              to hold at once, default 1024: above 200, imap-login serves many per process;
#              fs.inotify.max_user_instances is raised to it + 256, else IDLE past 128 processes
#              falls back to polling every 30 s), MAILSERVER_IDLE_NOTIFY (Dovecot's "* OK Still here" interval
#              during IDLE, default "2 mins").
set -euo pipefail

die() { echo "mail-server start.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: start.sh RUNDIR ISSUER [ISSUER...]"
[ "$(id -u)" = 0 ] || die "must run as root (Dovecot and Postfix masters need it)"
command -v dovecot >/dev/null || die "dovecot not installed: run tests/mail-server/install.sh"
[ -x /usr/lib/postfix/sbin/master ] || die "postfix not installed: run tests/mail-server/install.sh"

mkdir -p "$1"
RUN=$(cd "$1" && pwd -P)
shift
ISSUERS=()
for i in "$@"; do ISSUERS+=("${i%/}"); done
MAIL_USER=${MAILSERVER_UID_USER:-mailoauth}
TIMEOUT=${START_TIMEOUT:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
[ ! -e "$RUN/pids" ] || die "$RUN/pids exists: an instance may still be running (stop.sh $RUN)"
# Unix socket paths are limited to 108 bytes; Dovecot's longest is base_dir + ~30.
[ ${#RUN} -le 70 ] || die "RUNDIR path too long (${#RUN} > 70 chars) for unix sockets"

if ! id -u "$MAIL_USER" >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    --user-group "$MAIL_USER" >&2 || die "cannot create user $MAIL_USER"
fi
MUID=$(id -u "$MAIL_USER"); MGID=$(id -g "$MAIL_USER")

# Other users (postfix, the mail uid, dovenull) must traverse RUNDIR.
chmod 0755 "$RUN"
mkdir -p "$RUN/etc" "$RUN/keys/default/RS256" "$RUN/mail" "$RUN/home" "$RUN/state" \
  "$RUN/postfix/etc" "$RUN/postfix/queue" "$RUN/postfix/data" "$RUN/tls"
chown "$MUID:$MGID" "$RUN/mail" "$RUN/home"
chmod 0755 "$RUN/mail" "$RUN/home"

# ---------------------------------------------------------------- ports
read -r P_IMAPS P_IMAP P_POPS P_POP P_SUB P_SUBS P_RELAY < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(7):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

# ---------------------------------------------------------------- TLS: a CA and a leaf for localhost
TLS=$RUN/tls
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TLS/ca-key.pem" -out "$RUN/ca.pem" -days 30 \
  -subj "/CN=mailoauth test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null || die "openssl CA failed"
openssl req -newkey rsa:2048 -nodes -keyout "$TLS/key.pem" -out "$TLS/req.pem" -subj "/CN=localhost" \
  2>/dev/null || die "openssl req failed"
cat > "$TLS/ext.cnf" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EOF
openssl x509 -req -in "$TLS/req.pem" -CA "$RUN/ca.pem" -CAkey "$TLS/ca-key.pem" -CAcreateserial \
  -out "$TLS/cert.pem" -days 30 -extfile "$TLS/ext.cnf" 2>/dev/null || die "openssl sign failed"
cat "$TLS/cert.pem" "$RUN/ca.pem" > "$TLS/chain.pem"
if [ -n "${MAILSERVER_CERT:-}" ]; then
  [ -r "$MAILSERVER_CERT" ] && [ -r "${MAILSERVER_KEY:-}" ] || die "MAILSERVER_CERT needs MAILSERVER_KEY, both readable"
  cp "$MAILSERVER_CERT" "$TLS/chain.pem"
  cp "$MAILSERVER_KEY" "$TLS/key.pem"
fi
chmod 0600 "$TLS/key.pem" "$TLS/ca-key.pem"

# ---------------------------------------------------------------- the oauth server's signing key
# Dovecot looks keys up at <dict>/<azp or "default">/<alg>/<kid> (the tokens have no azp).
for ISSUER in "${ISSUERS[@]}"; do
  KEYJSON=$(curl -sf --max-time 10 "$ISSUER/test/signing-key") || die "cannot GET $ISSUER/test/signing-key"
  KID=$(python3 -c 'import json,sys; k=json.loads(sys.argv[1]); assert k["alg"]=="RS256"; print(k["kid"])' "$KEYJSON") \
    || die "bad signing key answer: $KEYJSON"
  python3 -c 'import json,sys; sys.stdout.write(json.loads(sys.argv[1])["pem"])' "$KEYJSON" > "$RUN/keys/default/RS256/$KID"
done
chmod -R a+rX "$RUN/keys"

# ---------------------------------------------------------------- Dovecot
O=https://outlook.test
AUTH_DEBUG=no
[ "${MAILSERVER_DEBUG:-}" = 1 ] && AUTH_DEBUG=yes
# write_oauth2 FILE SCOPE USERNAME_ATTRIBUTE [extra lines]
write_oauth2() {
  cat > "$1" <<EOF
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=$RUN/keys/
issuers = ${ISSUERS[*]}
scope = $2
username_attribute = $3
active_attribute =
active_value =
debug = $AUTH_DEBUG
$4
EOF
}
# Delegated (user) tokens: the upn claim must equal the SASL user; one scope per protocol.
write_oauth2 "$RUN/etc/oauth2-imap.conf.ext" "$O/IMAP.AccessAsUser.All" upn ""
write_oauth2 "$RUN/etc/oauth2-pop3.conf.ext" "$O/POP.AccessAsUser.All" upn ""
write_oauth2 "$RUN/etc/oauth2-submission.conf.ext" "$O/SMTP.Send" upn ""
# App-only (client credentials) tokens: scope .../.default, any mailbox in user=.
# username_format is a constant, so both sides of Dovecot's username comparison expand to it.
write_oauth2 "$RUN/etc/oauth2-app.conf.ext" "$O/.default" client_id "username_format = app-only"

CONNS=${MAILSERVER_CONNECTIONS:-1024}
LOGIN_SCALE=""
if [ "$CONNS" -gt 200 ]; then
  # Each TLS connection otherwise keeps its own imap-login process as its TLS proxy,
  # and the default process limit is 100: serve many per process.
  LOGIN_SCALE="  service_count = 0
  process_min_avail = 2
  client_limit = $CONNS
  vsz_limit = 1G"
fi
# Every IDLE-ing imap process holds an inotify instance, all under the one mail uid
# and shared by every instance running at once (tests run side by side): past the
# limit (128 here) Dovecot's IDLE falls back to looking every 30 s.
want=$(( CONNS + 256 ))
have=$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 0)
if [ "$have" -lt "$want" ]; then
  sysctl -qw fs.inotify.max_user_instances=$want >&2 \
    || echo "mail-server start.sh: cannot raise fs.inotify.max_user_instances to $want (have $have): IDLE beyond it polls every 30 s" >&2
fi

SSL_DH=""
[ -r /usr/share/dovecot/dh.pem ] && SSL_DH="ssl_dh = </usr/share/dovecot/dh.pem"

passdbs() {
  cat <<EOF
  passdb {
    driver = oauth2
    mechanisms = xoauth2 oauthbearer
    args = $RUN/etc/oauth2-$1.conf.ext
  }
  passdb {
    driver = oauth2
    mechanisms = xoauth2 oauthbearer
    args = $RUN/etc/oauth2-app.conf.ext
  }
EOF
}

cat > "$RUN/etc/dovecot.conf" <<EOF
# private mailoauth test instance (generated by tests/mail-server/start.sh)
instance_name = mailoauth-$P_IMAP
base_dir = $RUN/dovecot
state_dir = $RUN/state
log_path = $RUN/dovecot.log
protocols = imap pop3 submission lmtp
listen = 127.0.0.1
hostname = localhost
shutdown_clients = yes
default_internal_user = dovecot
default_login_user = dovenull

ssl = yes
ssl_cert = <$TLS/chain.pem
ssl_key = <$TLS/key.pem
ssl_min_protocol = TLSv1.2
$SSL_DH

# Loopback clients are "secured" in Dovecot 2.3 even without TLS (remote IP = local IP).
disable_plaintext_auth = yes
# PLAIN/LOGIN are offered (as Exchange does) but no passdb serves them: LOGIN always fails.
auth_mechanisms = plain login xoauth2 oauthbearer
auth_username_format = %Lu
auth_verbose = yes
auth_debug = $AUTH_DEBUG
auth_failure_delay = 0
mail_max_userip_connections = 1000
default_client_limit = $(( CONNS + 1000 ))
imap_idle_notify_interval = ${MAILSERVER_IDLE_NOTIFY:-2 mins}

mail_location = maildir:$RUN/mail/%u${MAILSERVER_MAIL_LAYOUT:+:LAYOUT=$MAILSERVER_MAIL_LAYOUT}
mail_uid = $MUID
mail_gid = $MGID
first_valid_uid = 1
first_valid_gid = 1
userdb {
  driver = static
  args = uid=$MUID gid=$MGID home=$RUN/home/%u allow_all_users=yes
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    auto = create
    special_use = \Sent
  }
  mailbox Drafts {
    special_use = \Drafts
  }
  mailbox Trash {
    special_use = \Trash
  }
}

# Dovecot refuses to start without a passdb for PLAIN/LOGIN: this one denies every password.
passdb {
  driver = static
  args = password=$(openssl rand -hex 24)
  deny = yes
  mechanisms = plain login
}
protocol imap {
$(passdbs imap)
}
protocol pop3 {
$(passdbs pop3)
  pop3_uidl_format = %08Xu%08Xv
}
protocol submission {
$(passdbs submission)
}

submission_relay_host = 127.0.0.1
submission_relay_port = $P_RELAY
submission_relay_trusted = yes
submission_relay_ssl = no
submission_max_mail_size = 50M
lmtp_save_to_detail_mailbox = no

service imap-login {
$LOGIN_SCALE
  inet_listener imap {
    address = 127.0.0.1
    port = $P_IMAP
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $P_IMAPS
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $P_POP
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $P_POPS
    ssl = yes
  }
}
service submission-login {
  inet_listener submission {
    address = 127.0.0.1
    port = $P_SUB
  }
  inet_listener submissions {
    address = 127.0.0.1
    port = $P_SUBS
    ssl = yes
  }
}
# Auth penalty (2..15 s delay per IP after failed logins): the auth process skips it when it
# cannot reach anvil's penalty socket; mode 0 means the listener isn't created.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
service imap {
  process_limit = $CONNS
}
service pop3 {
  process_limit = 1024
}
service submission {
  process_limit = 1024
}
EOF

doveconf -c "$RUN/etc/dovecot.conf" -n > "$RUN/etc/dovecot.effective.conf" 2> "$RUN/etc/doveconf.err" \
  || die "doveconf rejected the config: $(cat "$RUN/etc/doveconf.err")"

# ---------------------------------------------------------------- Postfix (relay for Dovecot submission)
# Dovecot submission -> Postfix smtpd on 127.0.0.1:P_RELAY -> lmtp to Dovecot's LMTP socket -> Maildir.
PFC=$RUN/postfix/etc
cat > "$PFC/main.cf" <<EOF
# private mailoauth test instance (generated by tests/mail-server/start.sh)
compatibility_level = 3.6
queue_directory = $RUN/postfix/queue
data_directory = $RUN/postfix/data
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = $RUN
maillog_file = $RUN/postfix.log
myhostname = localhost
mydomain = localdomain
myorigin = localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:5.1.1 local delivery is disabled
# every domain and every recipient is a mailbox, delivered by Dovecot LMTP
virtual_mailbox_domains = static:all
virtual_mailbox_maps = static:all
virtual_alias_maps =
virtual_transport = lmtp:unix:$RUN/dovecot/lmtp
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_banner = \$myhostname ESMTP mailoauth-test relay
biff = no
append_dot_mydomain = no
message_size_limit = 52428800
smtputf8_enable = no
# don't sit on failures: tests want an answer now
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
EOF
cat > "$PFC/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$P_RELAY inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
chown postfix "$RUN/postfix/data"
# Queue directories as /etc/postfix/postfix-files wants them (`postfix -c DIR check` would
# create them too, but takes 2 s).
Q=$RUN/postfix/queue
for d in active bounce corrupt defer deferred flush hold incoming private saved trace; do
  install -d -o postfix -g root -m 0700 "$Q/$d"
done
install -d -o postfix -g postdrop -m 0730 "$Q/maildrop"
install -d -o postfix -g postdrop -m 0710 "$Q/public"
install -d -o root -g root -m 0755 "$Q/pid"

# ---------------------------------------------------------------- start
: > "$RUN/dovecot.log"
setsid dovecot -F -c "$RUN/etc/dovecot.conf" < /dev/null > "$RUN/dovecot.stdout" 2>&1 &
DPID=$!
env -u MAIL_CONFIG -u MAIL_VERBOSE -u MAIL_DEBUG setsid /usr/lib/postfix/sbin/master -d -c "$PFC" < /dev/null > "$RUN/postfix.stdout" 2>&1 &
PPID_=$!
echo "$DPID $PPID_" > "$RUN/pids"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
deadline=$(( $(date +%s) + TIMEOUT ))
for p in $P_IMAPS $P_IMAP $P_POPS $P_POP $P_SUB $P_SUBS $P_RELAY; do
  until port_open "$p"; do
    if ! kill -0 "$DPID" 2>/dev/null || ! kill -0 "$PPID_" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
      echo "mail-server start.sh: port $p not answering; logs:" >&2
      tail -n 30 "$RUN/dovecot.log" "$RUN/dovecot.stdout" "$RUN/postfix.log" "$RUN/postfix.stdout" >&2 2>/dev/null || true
      bash "$HERE/stop.sh" "$RUN" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
done
# imap-login sends its greeting only once the auth process is up: wait for AUTH=XOAUTH2 in it.
python3 - "$P_IMAP" "$TIMEOUT" "$RUN/dovecot.log" <<'PY' || { tail -n 20 "$RUN/dovecot.log" >&2; bash "$HERE/stop.sh" "$RUN" >&2; die "Dovecot auth not ready"; }
import socket, sys, time
port, timeout = int(sys.argv[1]), float(sys.argv[2])
end = time.time() + timeout
while time.time() < end:
    with open(sys.argv[3], "rb") as log:
        if b"Fatal:" in log.read():
            sys.exit(1)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            greeting = s.makefile("rb").readline()
            if b"AUTH=XOAUTH2" in greeting:
                s.sendall(b"a LOGOUT\r\n")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
until [ -S "$RUN/dovecot/lmtp" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || die "no LMTP socket"
  sleep 0.1
done

printf '{"imap_tls":%s,"imap":%s,"pop_tls":%s,"pop":%s,"submission":%s,"submissions":%s,"smtp_relay":%s,"ca":"%s","maildir_root":"%s","key_dir":"%s","dovecot_log":"%s","postfix_log":"%s","pids":[%s,%s]}\n' \
  "$P_IMAPS" "$P_IMAP" "$P_POPS" "$P_POP" "$P_SUB" "$P_SUBS" "$P_RELAY" \
  "$RUN/ca.pem" "$RUN/mail" "$RUN/keys" "$RUN/dovecot.log" "$RUN/postfix.log" "$DPID" "$PPID_" | tee "$RUN/ports.json"
