# A throwaway Redis server for the tests and the benchmarks.
#
# Sourced by scripts/test: it defines start_redis and stop_redis. start_redis starts
# `redis-server` on a free port of 127.0.0.1, without persistence, with its files in a
# fresh temporary directory, and exports its URL as CONFIRM_MAIL_TEST_REDIS_URL;
# stop_redis stops it and deletes the directory.
#
# Run as a command, `bash scripts/lib/redis.sh serve` starts a server, prints its URL on
# stdout, and stops it once its standard input closes.

source "$(dirname "${BASH_SOURCE[0]}")/servers.sh"

redis_dir=""
redis_pid=""

stop_redis() {
    if [[ -n "$redis_pid" ]]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=""
    fi
    if [[ -n "$redis_dir" ]]; then
        rm -rf "$redis_dir"
        redis_dir=""
    fi
}

start_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        warn "redis-server is not installed: the tests that need it will skip"
        return 0
    fi
    redis_dir="$(mktemp -d -t confirm-mail-redis.XXXXXX)"
    local port
    port="$(free_port)"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$redis_dir" --save '' \
        --appendonly no --protected-mode yes --logfile "$redis_dir/server.log" &
    redis_pid=$!
    local _
    for _ in $(seq 100); do
        if python3 - "$port" <<'PY' 2>/dev/null; then
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
PY
            export CONFIRM_MAIL_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
            say "Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2) on 127.0.0.1:$port"
            return 0
        fi
        if ! kill -0 "$redis_pid" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    cat "$redis_dir/server.log" >&2 || true
    warn "Redis did not start"
    stop_redis
    return 1
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    serve_main "$0" start_redis stop_redis CONFIRM_MAIL_TEST_REDIS_URL "$@"
fi
