#!/usr/bin/env bash
# The service's receive figures: WATCH_N (default 1,000) watched mailboxes on
# one node against the private Dovecot (tests/mail-server, with
# MAILSERVER_CONNECTIONS above the watcher count and inotify instances raised):
# time until all watchers are connected at the reconnect rate (50/s), RSS,
# watcher-thread wake-ups and lease beats over WATCH_IDLE (default 60) idle
# seconds, new-mail latency p50/p99 (Postfix's 250 → signed webhook), and a
# Dovecot restart: all back, the most connections in one second.
#
#   sudo bench/receive.sh [sqlite|postgres|both]    WATCH_N=1000 WATCH_IDLE=60 PROFILE=dev|release
#
# Root: Dovecot and the PostgreSQL cluster run as their own users.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-sqlite}
profile=()
[ "${PROFILE:-dev}" = release ] && profile=(--release)
dbs=(sqlite postgres)
[ "$which" != both ] && dbs=("$which")
for db in "${dbs[@]}"; do
  WATCH_DB=$db WATCH_N=${WATCH_N:-1000} WATCH_IDLE=${WATCH_IDLE:-60} cargo test "${profile[@]}" -q \
    -p mailoauth-serve --test mail_receive watchers_at_scale -- --nocapture 2>&1 \
    | grep -E 'FIGURE|panicked|not within|test result|assert'
done
