#!/bin/sh
# Roles: api | worker | ray-head | ray-worker | migrate | any other command.
# `migrate` brings the database to the head migration and exits (compose runs it once, first). The API and
# the workers run the same upgrade before they start, so a lone `docker run` works too; it holds the
# database's migration lock (a PostgreSQL advisory lock), so containers starting together never collide,
# and after `migrate` it finds head and does nothing.
set -eu
role="${1:-api}"
[ $# -gt 0 ] && shift
case "$role" in
  migrate)
    exec zooens db upgrade ;;
  api)
    zooens db upgrade
    exec zooens serve --host "${ZOOENS_API_HOST:-0.0.0.0}" --port "${ZOOENS_API_PORT:-8000}" "$@" ;;
  worker)
    zooens db upgrade
    exec zooens worker "$@" ;;
  ray-head)
    exec ray start --head --block --port="${RAY_PORT:-6379}" --dashboard-host=0.0.0.0 "$@" ;;
  ray-worker)
    exec ray start --block --address="${ZOOENS_RAY_ADDRESS:?set ZOOENS_RAY_ADDRESS}" "$@" ;;
  *)
    exec "$role" "$@" ;;
esac
