#!/usr/bin/env bash
# Install the Debian packages the private mail-server fixture needs (Dovecot + Postfix),
# non-interactively and idempotently, without leaving system-wide daemons running.
#   bash tests/mail-server/install.sh        (as root; Debian 12)
set -euo pipefail

PKGS=(dovecot-core dovecot-imapd dovecot-pop3d dovecot-submissiond dovecot-lmtpd postfix openssl curl python3)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "mail-server: all packages already installed" >&2
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "mail-server: need root to install: ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Postfix: skip its configuration questions (we run a private instance with its own main.cf).
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string localhost" | debconf-set-selections

# Keep maintainer scripts from starting the system-wide services.
PRC=/usr/sbin/policy-rc.d
created_prc=0
if [ ! -e "$PRC" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$PRC"
  chmod 755 "$PRC"
  created_prc=1
fi
cleanup() { if [ "$created_prc" = 1 ]; then rm -f "$PRC"; fi; }
trap cleanup EXIT

# apt-cache may know nothing before the first update.
if ! apt-cache show dovecot-submissiond >/dev/null 2>&1 || [ -z "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial -e auxfiles)" ]; then
  apt-get update -q >&2
fi
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || { apt-get update -q >&2; apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }

# If a postinst started the system daemons anyway, stop them by their pidfiles only.
for pf in /run/dovecot/master.pid /var/run/dovecot/master.pid /var/spool/postfix/pid/master.pid; do
  if [ -s "$pf" ]; then
    pid=$(tr -dc '0-9' < "$pf")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      echo "mail-server: stopping system daemon pid $pid ($pf)" >&2
      kill -TERM "$pid" 2>/dev/null || true
    fi
  fi
done
echo "mail-server: installed ${missing[*]}" >&2
