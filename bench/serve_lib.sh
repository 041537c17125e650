# Shared setup of the service benchmarks (sourced; needs root for PostgreSQL):
# a scratch directory, processes stopped at exit, free loopback ports, JSON
# fields, and a private PostgreSQL cluster per run.
#
# In: $1 of `source` — the scratch directory's prefix (e.g. /tmp/msb).
# Out: $tmp, $pids (append PIDs to stop at exit), free_port, json,
#      bench_home DIR (sets $pp, $provider), bench_connector PORT,
#      start_pg DIR (sets $database to the `[serve]` line, $postmaster), stop_pg.
set -euo pipefail
PG=/usr/lib/postgresql/15/bin
tmp=$(mktemp -d "${1:-/tmp/mbench}.XXXX")
chmod 755 "$tmp"
pids=()
pgdata=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$pgdata" ] && runuser -u postgres -- "$PG/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])$2)" "$1"; }

# A cluster under DIR/pg owned by `postgres` (initdb refuses root), trust
# auth for the `mailoauth` role, on a free loopback port.
start_pg() {
  local dir=$1 pgport
  pgdata=$dir/pg/data
  mkdir -p "$dir/pg/sock"; chown -R postgres:postgres "$dir/pg"
  runuser -u postgres -- "$PG/initdb" -D "$pgdata" -U mailoauth --auth=trust -E UTF8 >/dev/null
  pgport=$(free_port)
  runuser -u postgres -- "$PG/pg_ctl" -D "$pgdata" -l "$dir/pg/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $pgport -k $dir/pg/sock -c max_connections=100" start >/dev/null
  postmaster=$(head -1 "$pgdata/postmaster.pid")
  database="database = \"postgres://mailoauth@127.0.0.1:$pgport/postgres\""
}

stop_pg() {
  runuser -u postgres -- "$PG/pg_ctl" -D "$pgdata" -m fast stop >/dev/null
  pgdata=
}

# DIR's XDG directories, exported, and a scripted provider of its own (its
# counters are the judge): $pp its port, $provider its PID.
bench_home() {
  local dir=$1
  mkdir -p "$dir/config/mailoauth" "$dir/state"
  export XDG_CONFIG_HOME=$dir/config XDG_STATE_HOME=$dir/state HOME=$dir
  python3 bench/scripted_provider.py > "$dir/provider.out" & provider=$!; pids+=($provider)
  for _ in $(seq 50); do grep -q port "$dir/provider.out" 2>/dev/null && break; sleep 0.1; done
  pp=$(json "$(head -1 "$dir/provider.out")" '["port"]')
}

# The connector `bench` at the scripted provider, for a node on port $1.
bench_connector() {
  cat <<TOML
[serve.connectors.bench]
provider = "custom"
client_id = "bench"
authorize_url = "http://127.0.0.1:$pp/auth"
token_url = "http://127.0.0.1:$pp/token"
redirect_uri = "http://127.0.0.1:$1/oauth/callback"
scopes = ["https://outlook.test/IMAP.AccessAsUser.All", "offline_access"]
TOML
}
