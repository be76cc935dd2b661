#!/usr/bin/env bash
# bench/compare.sh: measure wsmesh against peer proxies on this machine.
#
# Starts, on 127.0.0.1 only, the wsmesh echo server (the backend of every
# target) and these targets in front of it:
#
#   direct              the echo server itself (the reference of each round)
#   iocopy-1hop         wsmesh bench relay: a plain Go io.Copy TCP relay
#   wsmesh-1hop         one sidecar: outbound listener -> Service "echo"
#   wsmesh-1hop-splice  the same with --observe-websocket=false (splice relay)
#   wsmesh-2hop-h1      client sidecar -> server sidecar over HTTP/1.1
#   wsmesh-2hop-h2      client sidecar -> server sidecar over HTTP/2 (RFC 8441)
#   haproxy-1hop, haproxy-2hop-h1, haproxy-2hop-h2 (proto h2, http-reuse always)
#   nginx-1hop, nginx-2hop
#   nghttpx-1hop        when nghttpx is installed
#
# and runs `wsmesh bench` latency, throughput, stream and upgrade against each
# target, interleaved: every round runs each mode against every target (in a
# rotated order) before the next round starts. Then the idle mode holds
# --idle-conns WebSockets through freshly started HTTP/2 chains. Results are
# JSON files under OUT/results; OUT/summary.md has the tables (each target as
# a ratio to direct in the same round, and each proxy's CPU per message).
# OUT defaults to $TMPDIR/wsmesh-bench-DATE; OUT/logs has every process's
# output and access log.
#
# Access logging is ON for every proxy, to a file under OUT/logs: wsmesh's
# Istio JSON line, HAProxy's httplog, nginx's combined, nghttpx's default,
# each one line per WebSocket written when it closes.
#
# Usage: bench/compare.sh [--rounds N] [--duration D] [--warmup D]
#          [--idle-conns N] [--out DIR] [--targets "t1 t2 ..."]
#          [--modes "latency throughput stream upgrade"] [--no-idle]
#          [--no-install]
set -euo pipefail

ROUNDS=3
DURATION=5s
WARMUP=1s
IDLE_CONNS=10000
IDLE_HOLD=5s
OUT=""
MODES="latency throughput stream upgrade"
TARGETS="direct iocopy-1hop wsmesh-1hop wsmesh-1hop-splice wsmesh-2hop-h1 wsmesh-2hop-h2 haproxy-1hop haproxy-2hop-h1 haproxy-2hop-h2 nginx-1hop nginx-2hop nghttpx-1hop"
IDLE_TARGETS="wsmesh-2hop-h2 haproxy-2hop-h2"
IDLE=1
INSTALL=1

while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) ROUNDS=$2; shift 2 ;;
	--duration) DURATION=$2; shift 2 ;;
	--warmup) WARMUP=$2; shift 2 ;;
	--idle-conns) IDLE_CONNS=$2; shift 2 ;;
	--idle-targets) IDLE_TARGETS=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--targets) TARGETS=$2; shift 2 ;;
	--modes) MODES=$2; shift 2 ;;
	--no-idle) IDLE=0; shift ;;
	--no-install) INSTALL=0; shift ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CFG=$ROOT/bench/configs
OUT=${OUT:-${TMPDIR:-/tmp}/wsmesh-bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/results" "$OUT/logs"
cd "$ROOT"

# --- peers ----------------------------------------------------------------
if [ "$INSTALL" = 1 ]; then
	missing=()
	command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
	command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
	command -v nghttpx >/dev/null 2>&1 || missing+=(nghttp2-proxy)
	if [ ${#missing[@]} -gt 0 ]; then
		echo "installing peers: ${missing[*]}" >&2
		SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
		export DEBIAN_FRONTEND=noninteractive
		$SUDO apt-get update -qq
		$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
			{ [ " ${missing[*]} " = " nginx-light " ] && $SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null; } || true
	fi
fi

# 10,000 idle WebSockets need more descriptors than the usual 1024 soft limit
# in the generator and in every proxy; children inherit this.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WSMESH=$OUT/wsmesh
go build -o "$WSMESH" ./cmd/wsmesh

# --- process bookkeeping: every process started is stopped by its PID -----
declare -A TPIDS   # target -> "label=pid,..." (for --pids)
declare -A TKILL   # target -> "pid pid ..." (what to stop)
declare -A TURL TCONNECT
ALL_PIDS=()

cleanup() {
	local pid
	for pid in "${ALL_PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${ALL_PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn LOGNAME CMD...: start CMD in the background, log to OUT/logs/LOGNAME.
spawn() {
	local log=$1; shift
	"$@" >"$OUT/logs/$log.out" 2>"$OUT/logs/$log.err" &
	LAST_PID=$!
	ALL_PIDS+=("$LAST_PID")
}

wait_port() {
	local port=$1 i
	for i in $(seq 1 100); do
		if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "compare.sh: nothing listens on 127.0.0.1:$port" >&2
	return 1
}

# children PID: the child PIDs of a master process (nginx's and nghttpx's
# workers, the processes doing the work).
children() {
	local i w
	for i in $(seq 1 50); do
		w=$(pgrep -P "$1" | tr '\n' ' ')
		[ -n "$w" ] && { echo "$w"; return; }
		sleep 0.05
	done
}

sidecar() { # LOGNAME CONFIG_DIR WORKLOAD [flags...]
	local log=$1 dir=$2 wl=$3; shift 3
	spawn "$log" "$WSMESH" sidecar -c "$dir" -w "$wl" --admin "" --access-log "$OUT/logs/$log-access.log" --log-level warn "$@"
}

SVC=websockets-server.default.svc.cluster.local

start_target() {
	local t=$1 a b w pids
	case $t in
	direct)
		TURL[$t]=ws://127.0.0.1:21000/; TPIDS[$t]=""; TKILL[$t]="" ;;
	iocopy-1hop)
		spawn $t "$WSMESH" bench relay --listen 127.0.0.1:21010 --upstream 127.0.0.1:21000; a=$LAST_PID
		wait_port 21010
		TURL[$t]=ws://127.0.0.1:21010/; TPIDS[$t]="relay=$a"; TKILL[$t]="$a" ;;
	wsmesh-1hop|wsmesh-1hop-splice)
		local port=21100 extra=()
		[ $t = wsmesh-1hop-splice ] && { port=21150; extra=(--observe-websocket=false); }
		sidecar $t "$CFG/$t" bench-client "${extra[@]}"; a=$LAST_PID
		wait_port $port
		TURL[$t]=ws://echo.default.svc.cluster.local:$port/
		TCONNECT[$t]=echo.default.svc.cluster.local:$port=127.0.0.1:$port
		TPIDS[$t]="sidecar=$a"; TKILL[$t]="$a" ;;
	wsmesh-2hop-h1|wsmesh-2hop-h2)
		local port=21200; [ $t = wsmesh-2hop-h2 ] && port=21300
		sidecar $t-server "$CFG/$t" websockets-server; b=$LAST_PID
		sidecar $t-client "$CFG/$t" websockets-client; a=$LAST_PID
		wait_port $port; wait_port $((port + 1))
		TURL[$t]=ws://$SVC:$port/; TCONNECT[$t]=$SVC:$port=127.0.0.1:$port
		TPIDS[$t]="client=$a,server=$b"; TKILL[$t]="$a $b" ;;
	haproxy-1hop)
		spawn $t haproxy -db -f "$CFG/haproxy/1hop.cfg"; a=$LAST_PID
		wait_port 21400
		TURL[$t]=ws://127.0.0.1:21400/; TPIDS[$t]="haproxy=$a"; TKILL[$t]="$a" ;;
	haproxy-2hop-h1|haproxy-2hop-h2)
		local port=21500 v=h1; [ $t = haproxy-2hop-h2 ] && { port=21600; v=h2; }
		spawn $t-b haproxy -db -f "$CFG/haproxy/2hop-$v-b.cfg"; b=$LAST_PID
		spawn $t-a haproxy -db -f "$CFG/haproxy/2hop-$v-a.cfg"; a=$LAST_PID
		wait_port $port; wait_port $((port + 1))
		TURL[$t]=ws://127.0.0.1:$port/; TPIDS[$t]="hop1=$a,hop2=$b"; TKILL[$t]="$a $b" ;;
	nginx-1hop|nginx-2hop)
		local confs=(1hop) port=21700 c
		[ $t = nginx-2hop ] && { confs=(2hop-b 2hop-a); port=21800; }
		pids=""; TKILL[$t]=""
		for c in "${confs[@]}"; do
			mkdir -p "$OUT/nginx-$c/logs"
			spawn nginx-$c nginx -p "$OUT/nginx-$c/" -c "$CFG/nginx/$c.conf"; a=$LAST_PID
			TKILL[$t]+="$a "
			case $c in 1hop) wait_port 21700 ;; 2hop-b) wait_port 21801 ;; 2hop-a) wait_port 21800 ;; esac
			for w in $(children "$a"); do pids+="${pids:+,}$c-worker=$w"; done
		done
		wait_port $port
		TURL[$t]=ws://127.0.0.1:$port/; TPIDS[$t]=$pids ;;
	nghttpx-1hop)
		command -v nghttpx >/dev/null 2>&1 || return 1
		spawn $t nghttpx --conf=/dev/null --frontend='127.0.0.1,21850;no-tls' --backend='127.0.0.1,21000' \
			--workers=2 --accesslog-file="$OUT/logs/$t-access.log" --errorlog-file="$OUT/logs/$t-error.log" \
			--frontend-read-timeout=1h --backend-read-timeout=1h --no-ocsp; a=$LAST_PID
		wait_port 21850
		pids=""; for w in $(children "$a"); do pids+="${pids:+,}nghttpx-worker=$w"; done
		TURL[$t]=ws://127.0.0.1:21850/; TPIDS[$t]=$pids; TKILL[$t]="$a" ;;
	*) echo "compare.sh: unknown target $t" >&2; return 1 ;;
	esac
}

stop_target() {
	local pid
	for pid in ${TKILL[$1]}; do kill "$pid" 2>/dev/null || true; done
	for pid in ${TKILL[$1]}; do wait "$pid" 2>/dev/null || true; done
	TKILL[$1]=""
}

bench() { # MODE TARGET ROUND [flags...]
	local mode=$1 t=$2 r=$3; shift 3
	local args=(bench "$mode" "${TURL[$t]}" --label "$t" --round "$r" --warmup "$WARMUP" -q
		--json "$OUT/results/$mode-$t-$r.json")
	[ -n "${TCONNECT[$t]:-}" ] && args+=(--connect-to "${TCONNECT[$t]}")
	[ -n "${TPIDS[$t]}" ] && args+=(--pids "${TPIDS[$t]}")
	"$WSMESH" "${args[@]}" "$@" >>"$OUT/logs/bench-tables.txt" 2>>"$OUT/logs/bench.err"
}

# --- start ----------------------------------------------------------------
spawn echo "$WSMESH" echo --listen 127.0.0.1:21000 --no-compression; ECHO=$!
wait_port 21000

LIVE=()
for t in $TARGETS; do
	if start_target "$t" && "$WSMESH" bench latency "${TURL[$t]}" ${TCONNECT[$t]:+--connect-to "${TCONNECT[$t]}"} \
		--duration 200ms --warmup 0 -q >/dev/null 2>"$OUT/logs/smoke-$t.err"; then
		LIVE+=("$t")
	else
		echo "compare.sh: target $t does not work, skipped (see $OUT/logs/)" >&2
		stop_target "$t" 2>/dev/null || true
	fi
done
{
	echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
	echo "go: $(go version | cut -d' ' -f3), haproxy: $(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f3), nginx: $(nginx -v 2>&1 | cut -d/ -f2), nghttpx: $(nghttpx --version 2>/dev/null | head -1 | cut -d' ' -f2)"
	echo "rounds: $ROUNDS, duration: $DURATION per run, warmup: $WARMUP, targets: ${LIVE[*]}"
	echo "access logs: on for every proxy, to files"
} | tee "$OUT/machine.txt" >&2

# --- interleaved rounds ---------------------------------------------------
n=${#LIVE[@]}
for r in $(seq 1 "$ROUNDS"); do
	for mode in $MODES; do
		for i in $(seq 0 $((n - 1))); do
			t=${LIVE[$(((i + r - 1) % n))]}
			printf '\rround %d/%d  %-10s %-20s' "$r" "$ROUNDS" "$mode" "$t" >&2
			bench "$mode" "$t" "$r" --duration "$DURATION" || echo " (failed: see $OUT/logs/bench.err)" >&2
		done
	done
done
echo >&2

# --- idle: fresh processes per round so earlier runs' heap does not count --
if [ "$IDLE" = 1 ]; then
	for r in $(seq 1 "$ROUNDS"); do
		for t in $IDLE_TARGETS; do
			[[ " ${LIVE[*]} " == *" $t "* ]] || continue
			printf '\ridle round %d/%d  %-20s' "$r" "$ROUNDS" "$t" >&2
			stop_target "$t"
			if ! start_target "$t"; then
				echo " (did not start: see $OUT/logs/)" >&2
				continue
			fi
			sleep 1
			bench idle "$t" "$r" --conns "$IDLE_CONNS" --duration "$IDLE_HOLD" --warmup 2s ||
				echo " (failed: see $OUT/logs/bench.err)" >&2
		done
	done
	echo >&2
fi

ORDER=$(IFS=,; echo "${LIVE[*]}")
{
	cat "$OUT/machine.txt"
	"$WSMESH" bench summarize "$OUT/results" --order "$ORDER"
} | tee "$OUT/summary.md"
echo "results: $OUT" >&2
