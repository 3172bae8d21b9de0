#!/usr/bin/env bash
# Real outcome-table collection: llama-servers on 127.0.0.1 + a resumable `uniscale.lab.collect run`,
# supervised in the background. Idempotent: `start` while it runs does nothing; after a crash, a
# reboot or `stop`, `start` again resumes (pairs already "ok" in the table are skipped).
#
#   scripts/collect_real.sh start            # background supervisor (nohup, nice -n 5)
#   scripts/collect_real.sh status           # supervisor, servers, table counts, last log lines
#   scripts/collect_real.sh stop             # stop supervisor + collector (servers keep running)
#   scripts/collect_real.sh stop --servers   # ... and the llama-servers started by serve.sh
#   scripts/collect_real.sh export           # python/uniscale/data/$TABLE.jsonl.gz + $TABLE.meta.json
#   scripts/collect_real.sh snapshot         # the raw table so far -> data/collect/$TABLE.raw.jsonl.gz
#                                            # (committed, so a collection spanning several
#                                            # sessions or machines never loses a pair; `start`
#                                            # restores it when $OUT does not exist)
#   scripts/collect_real.sh supervise        # the loop itself, in the foreground
#
# Environment (defaults):
#   TABLE=real_v2              the table's name (real_v1 was collected with prompt v2)
#   MODELS="smollm2 qwen05 qwen15"   models to serve and collect
#                              (ports 8101 8102 8103, -t 1 each; 3 servers on 2 cores are slow)
#   SEQUENTIAL=1               collect one model after the other, each server with THREADS=2
#                              (7x faster for Qwen-1.5B than three 1-thread servers at once);
#                              SEQUENTIAL=0: all MODELS side by side, THREADS=1 each
#   SAMPLES=8  ITEMS=python/uniscale/data/items.jsonl  THREADS=2 (sequential) / 1
#   OUT=${UNISCALE_CACHE:-~/.cache/uniscale}/collect/$TABLE.jsonl   (outside the repo)
#   MAX_ROUNDS=50              supervisor rounds (each: ensure servers, run collector)
#   EXTRA_ARGS=""              passed to `python -m uniscale.lab.collect run`
#
# The supervisor runs in its own session (setsid); its pid is in $OUT.dir/supervisor.pid and its
# log in $OUT.dir/collect.log. Each round it (re)starts any server whose /health is not 200, then
# runs the collector over all MODELS; it stops when a round finishes with nothing failed. While
# the collector runs, a watchdog checks every 20 s that each server's port accepts connections and
# restarts a server that refused twice in a row (the collector waits --server-wait-s = 120 s for a
# dead server). A slow /health is not treated as down: under load it can take several seconds.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache="${UNISCALE_CACHE:-$HOME/.cache/uniscale}"
TABLE="${TABLE:-real_v2}"
MODELS="${MODELS:-smollm2 qwen05 qwen15}"
SAMPLES="${SAMPLES:-8}"
ITEMS="${ITEMS:-$repo/python/uniscale/data/items.jsonl}"
SEQUENTIAL="${SEQUENTIAL:-1}"
if [[ "$SEQUENTIAL" == 1 ]]; then THREADS="${THREADS:-2}"; else THREADS="${THREADS:-1}"; fi
OUT="${OUT:-$cache/collect/$TABLE.jsonl}"
SNAPSHOT="$repo/data/collect/$TABLE.raw.jsonl.gz"
SNAPSHOT_META="$repo/data/collect/$TABLE.raw.meta.json"
MAX_ROUNDS="${MAX_ROUNDS:-50}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
PY="${PYTHON:-python3}"
dir="$(dirname "$OUT")"
pidfile="$dir/supervisor.pid"
log="$dir/collect.log"
mkdir -p "$dir"
export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}"

port_of() {
  case "$1" in
    smollm2) echo 8101 ;; qwen05) echo 8102 ;; qwen15) echo 8103 ;;
    *) echo "unknown model $1 (smollm2 qwen05 qwen15)" >&2; return 1 ;;
  esac
}

listening() {  # listening PORT -> exit 0 unless the port refuses connections (a busy server
  # can take many seconds to answer /health on a loaded machine; that is not "down")
  "$PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except TimeoutError:
    sys.exit(0)
except OSError:
    sys.exit(1)
finally:
    s.close()
sys.exit(0)
EOF
}

supervisor_alive() {
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

ensure_servers() {
  for m in $MODELS; do
    p="$(port_of "$m")"
    if listening "$p"; then continue; fi
    echo "$(date '+%F %T') starting llama-server $m on port $p"
    "$repo/scripts/llm/serve.sh" stop "$m" >/dev/null 2>&1 || true   # clears a stale pid file
    "$repo/scripts/llm/serve.sh" start "$m:$p" -t "$THREADS" || echo "could not start $m"
  done
}

declare -A down_count=()

watchdog() {  # restart a server whose port refused connections twice in a row, 20 s apart
  for m in $MODELS; do
    p="$(port_of "$m")"
    if listening "$p"; then
      down_count[$m]=0
      continue
    fi
    down_count[$m]=$((${down_count[$m]:-0} + 1))
    if [[ ${down_count[$m]} -ge 2 ]]; then
      echo "$(date '+%F %T') watchdog: $m on port $p is down; restarting it"
      "$repo/scripts/llm/serve.sh" stop "$m" >/dev/null 2>&1 || true
      "$repo/scripts/llm/serve.sh" start "$m:$p" -t "$THREADS" || echo "could not start $m"
      down_count[$m]=0
    fi
  done
}

supervise() {
  echo $$ >"$pidfile"
  trap 'rm -f "$pidfile"' EXIT
  if [[ "$SEQUENTIAL" != 1 ]]; then
    supervise_models
    return
  fi
  # One model at a time with all threads: on 2 cores three 1-thread servers side by side
  # collected Qwen-1.5B at 0.08 pairs/min, one 2-thread server alone at 0.58 pairs/min.
  local all="$MODELS" m rc=0
  for m in $all; do
    MODELS="$m"
    supervise_models || rc=$?
    "$repo/scripts/llm/serve.sh" stop "$m" >/dev/null 2>&1 || true
    if [[ $rc -ne 0 ]]; then return "$rc"; fi
  done
  MODELS="$all"
}

supervise_models() {
  for ((round = 1; round <= MAX_ROUNDS; round++)); do
    echo "$(date '+%F %T') round $round: models $MODELS -> $OUT"
    ensure_servers
    margs=()
    for m in $MODELS; do margs+=(--model "$m=http://127.0.0.1:$(port_of "$m")/v1"); done
    rc=0
    # shellcheck disable=SC2086
    "$PY" -m uniscale.lab.collect run --items "$ITEMS" --out "$OUT" -m "$SAMPLES" \
      "${margs[@]}" $EXTRA_ARGS &
    cpid=$!
    while kill -0 "$cpid" 2>/dev/null; do
      sleep 20
      kill -0 "$cpid" 2>/dev/null && watchdog
    done
    wait "$cpid" || rc=$?
    echo "$(date '+%F %T') round $round: collector exited with $rc"
    if [[ $rc -eq 0 ]]; then
      echo "$(date '+%F %T') complete"
      return 0
    fi
    if [[ $rc -eq 2 ]]; then
      echo "configuration error; not retrying"
      return 2
    fi
    sleep 60
  done
  echo "gave up after $MAX_ROUNDS rounds"
  return 1
}

cmd="${1:-status}"
case "$cmd" in
  start)
    if supervisor_alive; then
      echo "already running: supervisor pid $(cat "$pidfile"), log $log"
      exit 0
    fi
    cd "$repo"
    if [[ ! -e "$OUT" && -f "$SNAPSHOT" ]]; then
      gzip -dc "$SNAPSHOT" >"$OUT.restore" && mv "$OUT.restore" "$OUT"
      meta_out="${OUT%.jsonl}.meta.json"
      if [[ -f "$SNAPSHOT_META" ]]; then cp "$SNAPSHOT_META" "$meta_out"; fi
      echo "restored $(wc -l <"$OUT") lines of $TABLE from $SNAPSHOT"
    fi
    TABLE="$TABLE" MODELS="$MODELS" SAMPLES="$SAMPLES" ITEMS="$ITEMS" OUT="$OUT" THREADS="$THREADS" \
      SEQUENTIAL="$SEQUENTIAL" \
      MAX_ROUNDS="$MAX_ROUNDS" EXTRA_ARGS="$EXTRA_ARGS" \
      setsid nohup nice -n 5 "$0" supervise >>"$log" 2>&1 </dev/null &
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      supervisor_alive && break
      sleep 0.5
    done
    echo "started: supervisor pid $(cat "$pidfile" 2>/dev/null || echo '?'), log $log, table $OUT"
    ;;
  supervise)
    cd "$repo"
    supervise
    ;;
  stop)
    if supervisor_alive; then
      pid="$(cat "$pidfile")"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
      echo "stopped supervisor (process group $pid)"
      rm -f "$pidfile"
    else
      echo "supervisor not running"
    fi
    if [[ "${2:-}" == "--servers" ]]; then
      # shellcheck disable=SC2086
      "$repo/scripts/llm/serve.sh" stop $MODELS
    fi
    ;;
  status)
    if supervisor_alive; then
      echo "supervisor: running, pid $(cat "$pidfile")"
    else
      echo "supervisor: not running"
    fi
    "$repo/scripts/llm/serve.sh" status || true
    if [[ -f "$OUT" ]]; then
      "$PY" -m uniscale.lab.collect status "$OUT" --items "$ITEMS"
    else
      echo "no table yet ($OUT)"
    fi
    echo "--- $log (tail)"
    tail -n 5 "$log" 2>/dev/null || true
    ;;
  export)
    cd "$repo"
    "$PY" -m uniscale.lab.collect export "$OUT" "$repo/python/uniscale/data/$TABLE.jsonl.gz" --items "$ITEMS"
    ;;
  snapshot)
    mkdir -p "$(dirname "$SNAPSHOT")"
    # Only whole lines: a line being written right now is left for the next snapshot.
    python3 - "$OUT" "$SNAPSHOT" <<'PYEOF'
import gzip, os, sys
src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
data = data[: data.rfind(b"\n") + 1]
tmp = dst + ".tmp"
with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
    gz.write(data)
os.replace(tmp, dst)
print(f"snapshot: {data.count(chr(10).encode())} lines -> {dst} ({os.path.getsize(dst)} bytes)")
PYEOF
    meta_out="${OUT%.jsonl}.meta.json"
    if [[ -f "$meta_out" ]]; then cp "$meta_out" "$SNAPSHOT_META"; fi
    ;;
  *)
    echo "usage: $0 start|stop [--servers]|status|export|snapshot|supervise" >&2
    exit 2
    ;;
esac
