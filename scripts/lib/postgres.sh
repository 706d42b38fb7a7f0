# A throwaway PostgreSQL server for the tests and the benchmarks.
#
# Sourced by scripts/test: it defines postgres_bindir, start_postgres and stop_postgres.
# start_postgres starts a server on a free port of 127.0.0.1, with its data in a fresh
# temporary directory, and exports its URL as CONFIRM_MAIL_TEST_POSTGRES_URL;
# stop_postgres stops it and deletes the directory.
#
# Run as a command, `bash scripts/lib/postgres.sh serve` starts a server, prints its URL
# on stdout, and stops it once its standard input closes (the benchmarks use this, so
# the server goes away even when the process that asked for it is killed).

source "$(dirname "${BASH_SOURCE[0]}")/servers.sh"

# The bin directory of the newest installed Debian postgresql package.
postgres_bindir() {
    local dir found=""
    for dir in /usr/lib/postgresql/*/bin; do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            found="$dir"
        fi
    done
    if [[ -n "$found" ]]; then
        printf '%s\n' "$found"
        return 0
    fi
    return 1
}

pg_dir=""
pg_user=""
pg_bin=""

run_as_pg() {
    if [[ -n "$pg_user" ]]; then
        runuser -u "$pg_user" -- "$@"
    else
        "$@"
    fi
}

stop_postgres() {
    if [[ -n "$pg_dir" ]]; then
        if [[ -f "$pg_dir/data/postmaster.pid" ]]; then
            run_as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop \
                >/dev/null 2>&1 || true
        fi
        rm -rf "$pg_dir"
        pg_dir=""
    fi
}

start_postgres() {
    pg_bin="$(postgres_bindir)" || {
        warn "PostgreSQL is not installed: the tests that need it will skip"
        return 0
    }
    if [[ "$(id -u)" == 0 ]]; then
        # PostgreSQL refuses to run as root: use the Debian package's system user.
        pg_user=postgres
        if ! id -u "$pg_user" >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user"
        fi
        pg_dir="$(mktemp -d /tmp/confirm-mail-pg.XXXXXX)"
        chown "$pg_user" "$pg_dir"
    else
        pg_dir="$(mktemp -d -t confirm-mail-pg.XXXXXX)"
    fi
    local port
    port="$(free_port)"

    if ! run_as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 \
        --no-locale --no-sync >"$pg_dir/initdb.log" 2>&1; then
        cat "$pg_dir/initdb.log" >&2
        warn "initdb failed"
        return 1
    fi
    # A throwaway server: durability settings off make start-up and tests faster.
    cat >>"$pg_dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pg_dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
    if ! run_as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
        start >/dev/null; then
        cat "$pg_dir/server.log" >&2 || true
        warn "PostgreSQL did not start"
        return 1
    fi
    export CONFIRM_MAIL_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
    say "PostgreSQL $("$pg_bin/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    serve_main "$0" start_postgres stop_postgres CONFIRM_MAIL_TEST_POSTGRES_URL "$@"
fi
