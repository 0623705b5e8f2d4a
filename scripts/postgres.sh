#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests.
#   scripts/postgres.sh start DIR PORT   initdb a cluster in DIR (trust auth, 127.0.0.1 and a socket in DIR), start it
#                                        on 127.0.0.1:PORT, create database infer_test, print its DSN on stdout
#   scripts/postgres.sh stop DIR         stop the server started in DIR (nothing to do when none runs)
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` OS user (Debian's postgresql package
# creates it) and DIR is handed to that user, so DIR's parent directories must be searchable by it (mktemp -d is fine).
# Binaries: $PG_BINDIR, else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin, else initdb on PATH.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

bindir() {
  local d
  for d in "${PG_BINDIR:-}" "$(pg_config --bindir 2>/dev/null || true)" \
           $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return; fi
  done
  if command -v initdb >/dev/null; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  die "no PostgreSQL server binaries (initdb, pg_ctl) found: install PostgreSQL (Debian: apt-get install postgresql)"
}

# Run a server binary as the cluster's owner: the postgres OS user when we are root, else ourselves.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

start() {
  local dir port bin
  dir=$(realpath -m "$1")
  port=$2
  [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, not '$port'"
  bin=$(bindir)
  mkdir -p "$dir"
  if [[ $(id -u) -eq 0 ]]; then
    id -u postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' OS user to own the server"
    chown postgres: "$dir"
    runuser -u postgres -- test -w "$dir" || die "the postgres user cannot reach $dir (a parent directory is private)"
  fi
  if [[ ! -f $dir/data/PG_VERSION ]]; then
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync \
      >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    {
      echo "listen_addresses = '127.0.0.1'"
      echo "unix_socket_directories = '$dir'"
    } >>"$dir/data/postgresql.conf"
  fi
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "-p $port" -w -t 60 start >&2 \
    || { tail -n 30 "$dir/server.log" >&2 || true; die "the server did not start on 127.0.0.1:$port"; }
  local ready=0
  for _ in $(seq 1 100); do
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; then ready=1; break; fi
    sleep 0.1
  done
  [[ $ready -eq 1 ]] || die "the server on 127.0.0.1:$port is not accepting connections"
  if [[ -z $("$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'infer_test'") ]]; then
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres infer_test
  fi
  echo "postgresql://postgres@127.0.0.1:$port/infer_test"
}

stop() {
  local dir
  dir=$(realpath -m "$1")
  [[ -f $dir/data/postmaster.pid ]] || return 0
  as_owner "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2
}

case "${1:-}" in
  start) [[ $# -eq 3 ]] || die "usage: $0 start DIR PORT"; start "$2" "$3" ;;
  stop) [[ $# -eq 2 ]] || die "usage: $0 stop DIR"; stop "$2" ;;
  *) die "usage: $0 start DIR PORT | stop DIR" ;;
esac
