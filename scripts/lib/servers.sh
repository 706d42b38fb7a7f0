# What the throwaway servers of scripts/lib (postgres.sh, redis.sh) share: messages, a
# free port, and the `serve` command that runs one server for as long as its standard
# input stays open.

if ! declare -F say >/dev/null; then
    say() { printf '==> %s\n' "$*" >&2; }
fi
if ! declare -F warn >/dev/null; then
    warn() { printf 'WARNING: %s\n' "$*" >&2; }
fi

# A TCP port of 127.0.0.1 that nothing listens on now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# serve_main SCRIPT START STOP URL_VARIABLE [ARGS...]: `bash SCRIPT serve` starts the
# server with START, prints the URL START exported in URL_VARIABLE, and stops it with
# STOP once standard input closes (so it goes away even when its caller is killed).
serve_main() {
    local script="$1" start="$2" stop="$3" variable="$4"
    shift 4
    set -euo pipefail
    if [[ "${1:-}" != serve ]]; then
        printf 'usage: %s serve   (prints the URL; stops the server when stdin closes)\n' "$script" >&2
        exit 2
    fi
    trap "$stop" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    "$start"
    if [[ -z "${!variable:-}" ]]; then
        exit 1
    fi
    printf '%s\n' "${!variable}"
    cat >/dev/null || true
}
