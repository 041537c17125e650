#!/usr/bin/env bash
# The service's send figure: SEND_N (default 1,000) messages over 10 app-only
# mailboxes, accepted over 8 client connections at once and delivered through
# the private Dovecot's submission (tests/mail-server, relayed by Postfix), on
# SQLite and PostgreSQL. Prints the FIGURE lines: acceptance rate, delivery
# rate (from the first POST to the last message sent), Dovecot's count of
# SMTP logins.
#
#   sudo bench/send.sh [sqlite|postgres|both]     SEND_N=1000 PROFILE=dev|release
#
# Root: Dovecot and the PostgreSQL cluster run as their own users.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-both}
profile=()
[ "${PROFILE:-dev}" = release ] && profile=(--release)
dbs=(sqlite postgres)
[ "$which" != both ] && dbs=("$which")
for db in "${dbs[@]}"; do
  SEND_DB=$db cargo test "${profile[@]}" -q -p mailoauth-serve --test mail_send \
    a_thousand_queued_messages -- --nocapture 2>&1 | grep -E 'FIGURE|panicked|test result'
done
