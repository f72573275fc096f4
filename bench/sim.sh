#!/usr/bin/env bash
# Throughput of the Graph API simulator (issue 3: at least 200,000 events/s
# accepted in 1000-event batches). build/sim-load drives a fresh
# build/capid-graph-sim per run with realistic batches over a few keep-alive
# connections, a fixed number of requests each; the script prints the median
# of the runs and the simulator's peak RSS (VmHWM from /proc/PID/status).
# It also prints the simulator's CPU time per event (utime + stime from
# /proc/PID/stat), which does not depend on what else the machine is running.
# Run from the repository root after `make`.
#
# Knobs (environment): BUILD=build RUNS=5 REQUESTS=300 CONNS=3 BATCH=1000
set -euo pipefail

BUILD=${BUILD:-build}
RUNS=${RUNS:-5}
REQUESTS=${REQUESTS:-300}
CONNS=${CONNS:-3}
BATCH=${BATCH:-1000}
SIM=$BUILD/capid-graph-sim
LOAD=$BUILD/sim-load
PIXEL=1234
# The token travels through the environment, as capid's secrets do.
export SIM_BENCH_TOKEN=bench-token

for bin in "$SIM" "$LOAD"; do
    [ -x "$bin" ] || { echo "sim.sh: $bin is missing; run make first" >&2; exit 1; }
done

work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# One run: start the simulator with "$@", load it, read its peak RSS, stop it.
# Prints "<events/s> <VmHWM kB> <CPU ticks>".
one_run() {
    rm -f "$work/port"
    "$SIM" --listen 127.0.0.1:0 --port-file "$work/port" --token-env SIM_BENCH_TOKEN \
        --pixel "$PIXEL" --quiet "$@" 2>"$work/sim.log" &
    pid=$!
    local deadline=$((SECONDS + 10))
    until [ -s "$work/port" ]; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/sim.log" >&2; exit 1; }
        [ "$SECONDS" -lt "$deadline" ] || { echo "sim.sh: no port file" >&2; exit 1; }
        sleep 0.02
    done
    local out rate hwm ticks
    out=$("$LOAD" --url "http://127.0.0.1:$(cat "$work/port")" --pixel "$PIXEL" \
        --token-env SIM_BENCH_TOKEN --connections "$CONNS" --requests "$REQUESTS" --batch "$BATCH")
    rate=$(sed -n 's/.* \([0-9][0-9]*\) events\/s .*/\1/p' <<<"$out")
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill -TERM "$pid"
    wait "$pid" || { echo "sim.sh: simulator exited non-zero" >&2; exit 1; }
    pid=
    echo "$rate $hwm $ticks"
}

# Runs RUNS times and prints the summary line, labelled $1.
measure() {
    local label=$1
    shift
    local rates=() peak=0 ticks=0 rate hwm t
    for _ in $(seq "$RUNS"); do
        read -r rate hwm t < <(one_run "$@")
        rates+=("$rate")
        [ "$hwm" -gt "$peak" ] && peak=$hwm
        ticks=$((ticks + t))
    done
    local median us
    median=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p")
    us=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$((RUNS * REQUESTS * BATCH))" \
        'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
    echo "$label: $median events/s accepted (median of $RUNS runs), peak RSS $((peak / 1024)) MB"
    echo "  runs: ${rates[*]}; $REQUESTS x $BATCH events, $CONNS connections, $(nproc) cpus;" \
        "simulator CPU $us us/event"
}

measure sim
measure "sim --no-store" --no-store
