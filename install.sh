#!/bin/sh
# Build and install the `mailoauth` binary (into ~/.cargo/bin, or pass --root DIR).
#
# On Linux with glibc the binary is linked fully static and non-PIE: no dynamic
# loader, no symbol lookups, no relocations at start-up. `mailoauth token` runs
# on every mail-client connection, and this halves its start-up instructions
# (BENCHMARKS.md). Elsewhere it is a normal `cargo install`.
# Extra arguments go to `cargo install` (e.g. --root /usr/local).
set -eu
cd "$(dirname "$0")"
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  *-linux-gnu)
    # --target keeps these flags off build scripts and proc-macros (which must stay dynamic).
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
      exec cargo install --locked --path crates/mailoauth-cli --target "$host" --target-dir target/install "$@"
    ;;
  *)
    exec cargo install --locked --path crates/mailoauth-cli "$@"
    ;;
esac
