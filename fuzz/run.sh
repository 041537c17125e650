#!/usr/bin/env bash
# Run the fuzz targets one after another, each until it has used SECONDS of
# CPU time (not wall time: at nice 19 on a busy machine the two differ a lot),
# and print per target the CPU seconds used, the executions and the crashes.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 600, all targets)
#
# Not for CI. Needs the nightly toolchain and cargo-fuzz. New corpus entries go
# to fuzz/work/TARGET (not committed; fold them into corpus/ with
# `cargo +nightly fuzz cmin`), crash inputs to fuzz/artifacts/TARGET — copy each
# into regressions/TARGET, where the stable `cargo test` replays it.
#
# Limits: -rss_limit_mb=512 -malloc_limit_mb=256 (one input may not make a
# parser hold more), -timeout=30 s per input. JOBS=2 runs two targets at a
# time (still at nice 19); LOCK=file builds under `flock file`.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-600}
[ $# -gt 0 ] && shift
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
jobs=${JOBS:-1}
lock=${LOCK:-/tmp/mailoauth-cargo.lock}

# Debug assertions on: overflow checks are what the stable tests run with too.
flock "$lock" nice -n 19 cargo +nightly fuzz build -a
bin=target/x86_64-unknown-linux-gnu/release

# One target: run libFuzzer in rounds until the CPU budget is spent (a crash
# ends a round; the next round goes on, up to 5 crashes).
fuzz_one() {
  local t=$1 cpu=0 execs=0 crashes=0 round log tfile
  mkdir -p "work/$t" "artifacts/$t" "corpus/$t" "regressions/$t"
  log=$(mktemp) tfile=$(mktemp)
  while [ "$cpu" -lt "$secs" ] && [ "$crashes" -lt 5 ]; do
    round=$(( secs - cpu < 30 ? 30 : secs - cpu ))
    set +e
    /usr/bin/time -f '%U %S' -o "$tfile" nice -n 19 "$bin/$t" \
      -max_total_time="$round" -rss_limit_mb=512 -malloc_limit_mb=256 -timeout=30 \
      -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
      "work/$t" "corpus/$t" "regressions/$t" >"$log" 2>&1
    local rc=$?
    set -e
    cpu=$(awk -v c="$cpu" 'END { printf "%d", c + $1 + $2 }' "$tfile")
    execs=$(( execs + $(awk '/stat::number_of_executed_units/ { n = $2 } END { print n + 0 }' "$log") ))
    if [ "$rc" -ne 0 ]; then
      crashes=$(( crashes + 1 ))
      grep -m3 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | sed "s/^/  $t: /" >&2 || true
    fi
    cp "$log" "artifacts/$t/last.log"
  done
  rm -f "$log" "$tfile"
  printf '%-18s cpu_s=%-5d execs=%-10d crashes=%d artifacts=%d\n' "$t" "$cpu" "$execs" "$crashes" \
    "$(find "artifacts/$t" -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'slow-unit-*' | wc -l)"
}

printf 'fuzz/run.sh: %d CPU seconds per target, %d at a time, started %s\n' "$secs" "$jobs" "$(date -Is)"
running=0
for t in "${targets[@]}"; do
  fuzz_one "$t" &
  running=$(( running + 1 ))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$(( running - 1 )); fi
done
wait
printf 'finished %s\n' "$(date -Is)"
