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

source bench/lib.sh

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
