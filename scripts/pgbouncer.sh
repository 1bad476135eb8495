# Sourced by scripts/test after scripts/postgres.sh: starts a private
# PgBouncer in transaction mode in front of the PostgreSQL at DATABASE_URL,
# on a free port, with the one setting authd needs
# (ignore_startup_parameters = extra_float_digits), and exports its URL as
# AUTHD_PGBOUNCER_URL; it stops when the sourcing script exits. PgBouncer is
# installed from Debian's packages when missing; where that fails,
# AUTHD_PGBOUNCER_SKIP says why, and the tests through it say so and skip.

start_private_pgbouncer() {
  local root=/tmp/authd-pgbouncer-$$
  local target port
  target=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 5432)' "$DATABASE_URL")
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$root"
  printf '"postgres" ""\n' >"$root/users.txt"
  cat >"$root/pgbouncer.ini" <<INI
[databases]
* = host=${target% *} port=${target#* }

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $root/users.txt
pool_mode = transaction
ignore_startup_parameters = extra_float_digits
max_client_conn = 1000
default_pool_size = 20
logfile = $root/pgbouncer.log
pidfile = $root/pgbouncer.pid
INI
  # PgBouncer refuses to run as root.
  local run=()
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$root"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" pgbouncer -d "$root/pgbouncer.ini"
  for _ in $(seq 50); do
    answers 127.0.0.1 "$port" && break
    sleep 0.1
  done
  export AUTHD_PGBOUNCER_URL="postgres://postgres@127.0.0.1:$port/postgres"
  AUTHD_PGBOUNCER_PIDFILE="$root/pgbouncer.pid"
  trap 'kill "$(cat "$AUTHD_PGBOUNCER_PIDFILE" 2>/dev/null)" 2>/dev/null || true' EXIT
  echo "pgbouncer: transaction mode on 127.0.0.1:$port, in front of ${target/ /:}" >&2
}

if [ -z "${AUTHD_PGBOUNCER_URL:-}" ]; then
  # python3 reads the URL and finds a free port; a machine with Rust alone
  # gets it from Debian's packages, as the black-box tests would.
  if ! command -v python3 >/dev/null; then
    echo "pgbouncer: installing python3 from Debian's packages" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3 >/dev/null
  fi
  if ! command -v pgbouncer >/dev/null && ! [ -x /usr/sbin/pgbouncer ]; then
    echo "pgbouncer: installing PgBouncer from Debian's packages" >&2
    { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq pgbouncer >/dev/null; } ||
      export AUTHD_PGBOUNCER_SKIP="PgBouncer could not be installed from Debian's packages"
  fi
  PATH="$PATH:/usr/sbin"
  if [ -z "${AUTHD_PGBOUNCER_SKIP:-}" ]; then
    start_private_pgbouncer
  fi
fi
