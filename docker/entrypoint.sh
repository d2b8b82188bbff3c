#!/bin/sh
# Entrypoint of the project image (POSIX sh).
#
# 1. The store: when SEARCH_STORAGE is unset and SEARCH_STORAGE_PASSWORD_FILE names a
#    file (a Docker secret), build the Postgres URL from it, so that the password is
#    never in the compose file, the environment of `docker inspect` or the image:
#      postgresql+psycopg2://$POSTGRES_USER:<password>@$POSTGRES_HOST:$POSTGRES_PORT/$POSTGRES_DB
#    (defaults: search, postgres, 5432, search).
# 2. Ray: when SEARCH_RAY_JOIN is set (host:port of a Ray head), join that cluster as a
#    node with no CPUs or GPUs first. A Ray driver (`search run --ray-address`) must run
#    on a node of the cluster; this one only hosts the driver, never a trial.
# Then run the command.
set -eu

if [ -z "${SEARCH_STORAGE:-}" ] && [ -n "${SEARCH_STORAGE_PASSWORD_FILE:-}" ]; then
    if [ ! -r "$SEARCH_STORAGE_PASSWORD_FILE" ]; then
        echo "entrypoint: cannot read SEARCH_STORAGE_PASSWORD_FILE ($SEARCH_STORAGE_PASSWORD_FILE)" >&2
        exit 2
    fi
    password=$(cat "$SEARCH_STORAGE_PASSWORD_FILE")
    # The password goes into a URL unquoted: allow only characters that need no escaping
    # there (what `openssl rand -hex` and `-base64` minus +/= produce).
    case $password in
        "" | *[!A-Za-z0-9._~-]*)
            echo "entrypoint: the password in $SEARCH_STORAGE_PASSWORD_FILE must be non-empty" \
                "and use only A-Z a-z 0-9 . _ ~ - (e.g. openssl rand -hex 24)" >&2
            exit 2 ;;
    esac
    SEARCH_STORAGE="postgresql+psycopg2://${POSTGRES_USER:-search}:${password}@${POSTGRES_HOST:-postgres}:${POSTGRES_PORT:-5432}/${POSTGRES_DB:-search}"
    export SEARCH_STORAGE
    unset password
fi

if [ -n "${SEARCH_RAY_JOIN:-}" ]; then
    echo "entrypoint: joining the Ray cluster at $SEARCH_RAY_JOIN (no CPUs, no GPUs)" >&2
    ray start --address="$SEARCH_RAY_JOIN" --num-cpus=0 --num-gpus=0 --disable-usage-stats \
        >/tmp/ray-join.log 2>&1 || {
        cat /tmp/ray-join.log >&2
        echo "entrypoint: could not join the Ray cluster at $SEARCH_RAY_JOIN" >&2
        exit 1
    }
fi

exec "$@"
