# shellcheck shell=bash
# Shared helpers of the aioloop-nbd integration tests (sourced, not run).
#
#   . "$(dirname "$0")/lib.sh"
#   nbd_init "$@"            # $1 (or $AIOLOOP_NBD) is the daemon binary
#
# The server under test is chosen by $NBD_BACKEND:
#   aioloop  (default)  build/tools/nbd/aioloop-nbd, given as $1 or $AIOLOOP_NBD
#   qemu-nbd            one qemu-nbd process per export (no monitor, no
#                       IOThreads): lets the client side of a test be checked
#   nbdkit              nbdkit's file plugin, one process per export
# Tests that need what only aioloop-nbd has (the monitor, several exports on
# one socket) check nbd_is_aioloop and skip or narrow what they check.
#
# Files live in a directory under $AIOLOOP_TEST_DIR, else /var/tmp (not /tmp:
# tmpfs has no O_DIRECT), removed on exit unless NBD_KEEP=1.  Every process
# started with nbd_bg / nbd_start is killed on exit.

set -euo pipefail

NBD_TEST_NAME=$(basename "$0" .sh)
NBD_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export NBD_LIB_DIR
PYTHON=${PYTHON:-python3}
# Seconds to wait for a daemon's pidfile (ASan builds start slowly).
NBD_START_TIMEOUT=${NBD_START_TIMEOUT:-20}
NBD_STOP_TIMEOUT=${NBD_STOP_TIMEOUT:-60}

# pids to kill on exit (daemons and background clients)
NBD_PIDS=()
NBD_SERVER_PIDS=()
WORK=
D_LOG=

log() { printf '%s: %s\n' "$NBD_TEST_NAME" "$*"; }
die() {
    printf '%s: FAIL: %s\n' "$NBD_TEST_NAME" "$*" >&2
    exit 1
}
skip() {
    printf '%s: SKIP: %s\n' "$NBD_TEST_NAME" "$*" >&2
    exit 77
}
# need TOOL...: skip the test when a client tool is missing
need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"
    done
}

nbd_is_aioloop() { [ "$NBD_BACKEND" = aioloop ]; }

nbd_cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    if [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ -s "${D_LOG:-}" ]; then
        log "last lines of the server's stderr ($D_LOG):"
        tail -n 30 "$D_LOG" | sed 's/^/    | /' >&2
    fi
    for pid in "${NBD_SERVER_PIDS[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            i=0
            wait "$pid" 2>/dev/null || i=$?
            log "server $pid was not running any more: exit status $i" \
                "(0: a clean shutdown, >128: killed by signal $((i > 128 ? i - 128 : 0)))"
        fi
    done
    for pid in "${NBD_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${NBD_PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid still alive 5 s after SIGTERM, SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${NBD_KEEP:-0}" = 1 ] || { [ $rc -ne 0 ] && [ $rc -ne 77 ] &&
                [ "${NBD_KEEP_ON_FAIL:-0}" = 1 ]; }; then
            log "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit $rc
}

# nbd_init [DAEMON]: pick the backend, make $WORK, install the exit trap.
nbd_init() {
    NBD_BACKEND=${NBD_BACKEND:-aioloop}
    export NBD_BACKEND
    case $NBD_BACKEND in
    aioloop)
        AIOLOOP_NBD=${1:-${AIOLOOP_NBD:-}}
        [ -n "$AIOLOOP_NBD" ] || die "usage: $0 PATH-TO-aioloop-nbd (or set AIOLOOP_NBD)"
        [ -x "$AIOLOOP_NBD" ] || die "$AIOLOOP_NBD is not executable"
        # absolute: the test runs in $WORK (meson passes a relative path)
        AIOLOOP_NBD=$(cd "$(dirname "$AIOLOOP_NBD")" && pwd)/$(basename "$AIOLOOP_NBD")
        ;;
    qemu-nbd) need qemu-nbd ;;
    nbdkit) need nbdkit ;;
    *) die "unknown NBD_BACKEND=$NBD_BACKEND (aioloop, qemu-nbd, nbdkit)" ;;
    esac
    need "$PYTHON"
    local base=${AIOLOOP_TEST_DIR:-/var/tmp}
    mkdir -p "$base"
    WORK=$(mktemp -d "$base/aioloop-nbd-$NBD_TEST_NAME.XXXXXX")
    trap nbd_cleanup EXIT
    # clients that drop files in the current directory (fio's verify state)
    # drop them in $WORK
    cd "$WORK"
    trap 'exit 130' INT
    trap 'exit 143' TERM
    log "backend $NBD_BACKEND${AIOLOOP_NBD:+ ($AIOLOOP_NBD)}, files in $WORK"
}

# nbd_bg CMD...: run CMD in the background, killed on exit; sets BG_PID.
nbd_bg() {
    "$@" &
    BG_PID=$!
    NBD_PIDS+=("$BG_PID")
}

# nbd_forget PID: it has been waited for, don't kill it on exit.
nbd_forget() {
    local p keep=()
    for p in "${NBD_PIDS[@]}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    NBD_PIDS=("${keep[@]}")
}

# nbd_wait_writers PID...: wait for ackwriter.py writers started in the
# background; die unless each only got successes or ESHUTDOWN (exit 0)
nbd_wait_writers() {
    local p rc=0
    for p in "$@"; do
        wait "$p" || rc=$?
        nbd_forget "$p"
    done
    [ $rc = 0 ] || die "a writer got an error reply other than ESHUTDOWN (exit $rc)"
}

# mkimage PATH SIZE: a sparse file of SIZE (truncate syntax: 64M, 1G...)
mkimage() {
    rm -f "$1"
    truncate -s "$2" "$1"
}

# mkrandom PATH MIB: MIB MiB of random data
mkrandom() {
    head -c "$(($2 * 1024 * 1024))" /dev/urandom >"$1"
}

free_port() {
    "$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# --- the server ------------------------------------------------------------

# Key=value option string helpers ("id=a,file=/x,writable=on").
_opt() { # _opt SPEC KEY [DEFAULT]
    local IFS=, kv
    for kv in $1; do
        if [ "${kv%%=*}" = "$2" ]; then
            printf '%s' "${kv#*=}"
            return
        fi
    done
    printf '%s' "${3:-}"
}

# nbd_start [--iothreads N] [--tcp] [--monitor] [--aio MODE] EXPORT...
#
# EXPORT is an --export option string without "type=nbd":
#   id=ID,file=PATH[,name=NAME][,writable=on][,iothread=io0][,cache=none]
#   [,aio=io_uring][,description=TEXT][,multi-conn=on|off]
# (no commas in values).  Starts the $NBD_BACKEND server and waits for its
# pidfile.  Sets:
#   D_PID       pid of the (first) server process
#   D_SOCK      UNIX socket of the exports (aioloop: all of them)
#   D_PORT      TCP port (with --tcp; qemu-nbd/nbdkit: first export only)
#   D_MON       monitor socket (aioloop with --monitor), else empty
#   D_LOG       the server's stderr
# and nbd_uri NAME gives the URI of an export.
nbd_start() {
    local iothreads=0 tcp=0 monitor=0 i spec name file
    local -a exports=() args=()
    while [ $# -gt 0 ]; do
        case $1 in
        --iothreads) iothreads=$2; shift 2 ;;
        --tcp) tcp=1; shift ;;
        --monitor) monitor=1; shift ;;
        *) exports+=("$1"); shift ;;
        esac
    done
    [ ${#exports[@]} -gt 0 ] || die "nbd_start: no export"
    D_SOCK=$WORK/nbd.sock
    D_PORT=
    D_MON=
    D_LOG=$WORK/server.log
    NBD_SOCKS=()
    NBD_NAMES=()
    NBD_SERVER_PIDS=()
    rm -f "$D_SOCK" "$WORK"/nbd-*.sock
    [ $tcp = 0 ] || D_PORT=$(free_port)

    case $NBD_BACKEND in
    aioloop)
        for ((i = 0; i < iothreads; i++)); do
            args+=(--object "iothread,id=io$i")
        done
        for spec in "${exports[@]}"; do
            args+=(--export "type=nbd,$spec")
        done
        args+=(--nbd-server "addr.type=unix,addr.path=$D_SOCK")
        [ $tcp = 0 ] || args+=(--nbd-server "addr.type=inet,addr.host=127.0.0.1,addr.port=$D_PORT")
        if [ $monitor = 1 ]; then
            D_MON=$WORK/monitor.sock
            args+=(--monitor "$D_MON")
        fi
        _start_one "$WORK/server.pid" "$AIOLOOP_NBD" "${args[@]}" --pidfile "$WORK/server.pid"
        D_PID=$SERVER_PID
        NBD_SERVER_PIDS+=("$SERVER_PID")
        ;;
    qemu-nbd | nbdkit)
        [ $monitor = 0 ] || log "note: $NBD_BACKEND has no monitor"
        i=0
        for spec in "${exports[@]}"; do
            name=$(_opt "$spec" name "$(_opt "$spec" id)")
            file=$(_opt "$spec" file)
            local sock=$D_SOCK
            [ $i = 0 ] || sock=$WORK/nbd-$i.sock
            NBD_NAMES+=("$name")
            NBD_SOCKS+=("$sock")
            _start_peer "$spec" "$name" "$file" "$WORK/server-$i.pid" --unix "$sock"
            NBD_SERVER_PIDS+=("$SERVER_PID")
            # shellcheck disable=SC2034 # D_PID is for the callers
            [ $i != 0 ] || D_PID=$SERVER_PID
            if [ $i = 0 ] && [ $tcp = 1 ]; then
                _start_peer "$spec" "$name" "$file" "$WORK/server-tcp.pid" --tcp "$D_PORT"
                NBD_SERVER_PIDS+=("$SERVER_PID")
            fi
            i=$((i + 1))
        done
        ;;
    esac
}

# _start_peer SPEC NAME FILE PIDFILE --unix PATH | --tcp PORT
_start_peer() {
    local spec=$1 name=$2 file=$3 pidfile=$4 how=$5 where=$6
    local -a a=()
    local cache aio desc
    cache=$(_opt "$spec" cache writeback)
    aio=$(_opt "$spec" aio)
    desc=$(_opt "$spec" description)
    case $NBD_BACKEND in
    qemu-nbd)
        a=(qemu-nbd -f raw -x "$name" --persistent --shared=0 "--cache=$cache"
            --discard=unmap --pid-file "$pidfile")
        [ -z "$aio" ] || a+=("--aio=$aio")
        [ -z "$desc" ] || a+=(-D "$desc")
        [ "$(_opt "$spec" writable off)" = on ] || a+=(--read-only)
        if [ "$how" = --unix ]; then a+=(--socket "$where"); else a+=(--bind 127.0.0.1 --port "$where"); fi
        a+=("$file")
        ;;
    nbdkit)
        a=(nbdkit --foreground --exportname "$name" -P "$pidfile")
        [ -z "$desc" ] || a+=(--filter=exportname "exportdesc=fixed:$desc")
        [ "$(_opt "$spec" writable off)" = on ] || a+=(--readonly)
        if [ "$how" = --unix ]; then a+=(--unix "$where"); else a+=(--ipaddr 127.0.0.1 --port "$where"); fi
        a+=(file "file=$file")
        [ "$cache" != none ] || a+=(cache=none)
        ;;
    esac
    _start_one "$pidfile" "${a[@]}"
}

# _start_one PIDFILE CMD...: start CMD, wait for PIDFILE; sets SERVER_PID.
_start_one() {
    local pidfile=$1 t
    shift
    rm -f "$pidfile"
    "$@" 2>>"$D_LOG" &
    SERVER_PID=$!
    NBD_PIDS+=("$SERVER_PID")
    for ((t = 0; t < NBD_START_TIMEOUT * 20; t++)); do
        if [ -s "$pidfile" ]; then
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" || true
            cat "$D_LOG" >&2
            die "server exited before writing its pidfile: $*"
        fi
        sleep 0.05
    done
    cat "$D_LOG" >&2
    die "no pidfile $pidfile after ${NBD_START_TIMEOUT} s: $*"
}

# nbd_sock NAME: the UNIX socket serving export NAME
nbd_sock() {
    local i
    if nbd_is_aioloop; then
        printf '%s' "$D_SOCK"
        return
    fi
    for i in "${!NBD_NAMES[@]}"; do
        if [ "${NBD_NAMES[$i]}" = "$1" ]; then
            printf '%s' "${NBD_SOCKS[$i]}"
            return
        fi
    done
    die "nbd_sock: no export $1"
}

# nbd_uri NAME: nbd+unix:///NAME?socket=...
nbd_uri() { printf 'nbd+unix:///%s?socket=%s' "$1" "$(nbd_sock "$1")"; }

# nbd_alive: die unless every server process is still running
nbd_alive() {
    local p
    for p in "${NBD_SERVER_PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || {
            cat "$D_LOG" >&2
            die "server $p died${1:+ ($1)}"
        }
    done
}

# nbd_stop: SIGTERM the server(s), wait; dies unless every one exits 0.
nbd_stop() {
    local p rc i
    for p in "${NBD_SERVER_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || die "server $p was not running at SIGTERM"
    done
    for p in "${NBD_SERVER_PIDS[@]}"; do
        for ((i = 0; i < NBD_STOP_TIMEOUT * 10; i++)); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$p" 2>/dev/null && die "server $p still running ${NBD_STOP_TIMEOUT} s after SIGTERM"
        rc=0
        wait "$p" || rc=$?
        nbd_forget "$p"
        if [ $rc -ne 0 ]; then
            cat "$D_LOG" >&2
            die "server $p exited with $rc after SIGTERM (expected 0)"
        fi
    done
    NBD_SERVER_PIDS=()
}

# qmp CMD [JSON-ARGS]: run a monitor command, print its return value
qmp() { "$PYTHON" "$NBD_LIB_DIR/qmp.py" "$D_MON" "$@"; }

# json_get EXPR: evaluate python EXPR with j = JSON read from stdin
json_get() {
    "$PYTHON" -c 'import json, sys
j = json.load(sys.stdin)
v = eval(sys.argv[1])
print(json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v)' "$1"
}
