# Sourced by the scripts: makes sure a PostgreSQL server answers and exports
# DATABASE_URL for it, naming database ${AUTHD_DATABASE:-postgres}.
#
#   1. DATABASE_URL already set: used as it is.
#   2. A server answers at 127.0.0.1:5432: used, as user postgres (trust).
#   3. Otherwise PostgreSQL is installed from Debian's packages (when
#      missing) and a private cluster with trust authentication is started
#      on 127.0.0.1:5432, its data under /tmp/authd-postgres (outside the
#      checkout, which the postgres user may not be able to reach).
#
# In every case the server programs (initdb, pg_ctl) are made available
# and their directory exported as AUTHD_PG_BIN: the database-fault tests
# start, kill and restart servers of their own.

answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_postgres_programs() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "postgres: installing PostgreSQL from Debian's packages" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
  fi
  AUTHD_PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  export AUTHD_PG_BIN
}

start_private_postgres() {
  local bin=$AUTHD_PG_BIN root=/tmp/authd-postgres
  local data="$root/data" log="$root/server.log"
  mkdir -p "$root"
  # PostgreSQL refuses to run as root: as root, run it as the postgres user.
  local run=()
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$root"
    run=(runuser -u postgres --)
  fi
  if [ ! -s "$data/PG_VERSION" ]; then
    "${run[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  echo "postgres: starting a private server on 127.0.0.1:5432 (data: $data)" >&2
  "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=5432 -c unix_socket_directories=/tmp" start >/dev/null
}

install_postgres_programs
if [ -z "${DATABASE_URL:-}" ]; then
  if ! answers 127.0.0.1 5432; then
    start_private_postgres
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${AUTHD_DATABASE:-postgres}"
fi
