#!/usr/bin/env bash
# Server work per transfer, in instructions: a deterministic measure of what one
# wallet_ledger.transfer() call costs PostgreSQL, free of the machine's timing noise.
#
#   scripts/server-work.sh [-n TRANSFERS] [-p] [-b SIZE] VARIANT...
#
# VARIANT is NAME=UPTO[,EXTRA.sql...]: a database with migrations 1..UPTO of sql/ applied, then
# the extra SQL files in order (to try a change before it becomes a migration). Each database
# gets 10,000 wallets and a warm-up of 30,000 transfers (so that its tables and indexes are past
# their first, page-splitting updates), then VACUUM ANALYZE. The server is then stopped and each
# database is opened by `postgres --single` under cachegrind, once for W transfers and once for
# W + TRANSFERS, all in one procedure that commits after each transfer; the difference divided by
# TRANSFERS is the instructions per transfer (commit included, client and protocol excluded).
# -p runs the `pair` workload (two accounts, both directions) instead of `uniform`.
# -b SIZE sends the transfers as `wallet_ledger.transfer_batch` calls of SIZE items each (one
# transaction per batch; TRANSFERS is rounded down to whole batches), the statement the
# library's batches and its combiner send; the lock plan the library computes in Rust (the
# sorted union of the accounts and each item's positions in it) is computed in the procedure,
# a few thousand instructions per batch that the real path spends in the client instead.
#
# Needs PostgreSQL's server binaries (initdb, pg_ctl, postgres) on PATH or in PG_BIN, psql, and
# valgrind. Run as root, the server runs as the user `postgres` (or `nobody`).
set -euo pipefail

transfers=1000
pair=false
batch=0
while getopts "n:pb:" opt; do
    case $opt in
        n) transfers=$OPTARG ;;
        p) pair=true ;;
        b) batch=$OPTARG ;;
        *) echo "usage: $0 [-n TRANSFERS] [-p] [-b SIZE] NAME=UPTO[,EXTRA.sql...]..." >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: $0 [-n TRANSFERS] [-p] [-b SIZE] NAME=UPTO[,EXTRA.sql...]..." >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${PG_BIN:-$(dirname "$(command -v pg_ctl || command -v /usr/lib/postgresql/*/bin/pg_ctl | head -1)")}
for tool in "$bin/initdb" "$bin/pg_ctl" "$bin/postgres"; do
    [ -x "$tool" ] || { echo "missing $tool: install the PostgreSQL server (e.g. apt-get install postgresql-15) or set PG_BIN" >&2; exit 1; }
done
command -v psql >/dev/null || { echo "missing psql: install postgresql-client" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "missing valgrind: apt-get install valgrind" >&2; exit 1; }

dir=$(mktemp -d /tmp/server-work.XXXXXX)
as() { "$@"; }
if [ "$(id -u)" = 0 ]; then
    user=$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody)
    chown "$user" "$dir"
    as() { su "$user" -s /bin/sh -c "$(printf '%q ' "$@")"; }
fi
port=5499
psql_() { psql -q -X -v ON_ERROR_STOP=1 -h "$dir" -p $port -U postgres "$@"; }
cleanup() { as "$bin/pg_ctl" -D "$dir/data" -w stop -m fast >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

as "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
shared_buffers = 256MB
log_min_messages = warning
CONF
as "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null

names=()
for variant in "$@"; do
    name=${variant%%=*}
    spec=${variant#*=}
    upto=${spec%%,*}
    extras=()
    [ "$spec" = "$upto" ] || IFS=, read -r -a extras <<<"${spec#*,}"
    names+=("$name")
    psql_ -c "CREATE DATABASE $name"
    psql_ -d "$name" -c "CREATE SCHEMA wallet_ledger"
    for f in $(ls "$root"/sql/0*.sql | head -n "$upto") "${extras[@]}"; do
        psql_ -d "$name" -f "$f" >/dev/null
    done
    psql_ -d "$name" <<'SQL'
INSERT INTO wallet_ledger.currencies VALUES ('USD', 2);
-- The library's internal idempotency keys are '~' and a time-ordered (version 7) UUID.
CREATE FUNCTION public.key_v7() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT '~' || encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
               placing substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
               FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;
INSERT INTO wallet_ledger.accounts (currency, balance, min_balance)
SELECT 'USD', 1000000000, 0 FROM generate_series(1, 10000);
CREATE PROCEDURE public.run_n(n int, pair boolean) LANGUAGE plpgsql AS $$
DECLARE a bigint; b bigint; o text;
BEGIN
    FOR i IN 1..n LOOP
        IF pair THEN
            a := 1 + (i % 2); b := 3 - a;
        ELSE
            a := 1 + floor(random() * 10000)::bigint; b := (a + floor(random() * 9999)::bigint) % 10000 + 1;
        END IF;
        SELECT t.outcome INTO o FROM wallet_ledger.transfer(a, b, 1, public.key_v7(), NULL, 0::smallint, 0) t;
        IF o <> 'ok' THEN RAISE EXCEPTION 'transfer: %', o; END IF;
        COMMIT;
    END LOOP;
END $$;
CREATE PROCEDURE public.run_b(batches int, size int, pair boolean) LANGUAGE plpgsql AS $$
DECLARE af bigint[]; at bigint[]; u bigint[]; fp int[]; tp int[]; a bigint; b bigint; r record;
BEGIN
    FOR i IN 1..batches LOOP
        af := '{}'; at := '{}';
        FOR j IN 1..size LOOP
            IF pair THEN
                a := 1 + (j % 2); b := 3 - a;
            ELSE
                a := 1 + floor(random() * 10000)::bigint; b := (a + floor(random() * 9999)::bigint) % 10000 + 1;
            END IF;
            af := af || a; at := at || b;
        END LOOP;
        u := ARRAY(SELECT DISTINCT x FROM unnest(af || at) x ORDER BY x);
        fp := ARRAY(SELECT array_position(u, x) FROM unnest(af) WITH ORDINALITY AS q(x, o) ORDER BY o);
        tp := ARRAY(SELECT array_position(u, x) FROM unnest(at) WITH ORDINALITY AS q(x, o) ORDER BY o);
        SELECT * INTO r FROM wallet_ledger.transfer_batch(
            af, at, array_fill(1::numeric, ARRAY[size]),
            ARRAY(SELECT public.key_v7() FROM generate_series(1, size)),
            array_fill(NULL::text, ARRAY[size]), 0::smallint, 0, u, fp, tp,
            array_fill(false, ARRAY[size]), array_fill(NULL::jsonb, ARRAY[size]));
        IF EXISTS (SELECT 1 FROM unnest(r.outcomes) o WHERE o <> 'ok') THEN
            RAISE EXCEPTION 'transfer_batch: %', r.outcomes;
        END IF;
        COMMIT;
    END LOOP;
END $$;
SET synchronous_commit = off;
CALL public.run_n(30000, false);
VACUUM ANALYZE;
SQL
done
as "$bin/pg_ctl" -D "$dir/data" -w stop -m fast >/dev/null

instructions() { # database, transfers -> instructions of the whole single-user session
    if [ "$batch" -gt 0 ]; then
        printf 'CALL public.run_b(%s, %s, %s);\n' "$(($2 / batch))" "$batch" "$pair"
    else
        printf 'CALL public.run_n(%s, %s);\n' "$2" "$pair"
    fi |
        as valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
            "$bin/postgres" --single -D "$dir/data" -c synchronous_commit=off "$1" 2>&1 >/dev/null |
        sed -n 's/.*I[[:space:]]*refs:[[:space:]]*//p' | tr -d ,
}
warm=300
if [ "$batch" -gt 0 ]; then
    transfers=$((transfers / batch * batch))
    warm=$(((warm + batch - 1) / batch * batch))
    [ "$transfers" -gt 0 ] || { echo "-n must be at least -b" >&2; exit 2; }
fi
shape=uniform
[ "$pair" = true ] && shape=pair
[ "$batch" -gt 0 ] && shape="$shape, batches of $batch"
echo "instructions per transfer ($shape, $transfers transfers)"
for name in "${names[@]}"; do
    base=$(instructions "$name" $warm)
    total=$(instructions "$name" $((warm + transfers)))
    echo "$name $(((total - base) / transfers))"
done
