#!/bin/bash
# expand.sh BIN OUTDIR [NATSPORT KAFKAPORT HTTPPORT] — a small experiment (small.yaml) running while a 100,000-run
# sweep (huge.yaml) is submitted and expanded; no cancel. OUTDIR/timeline.txt: the small runs' states with their times
# beside the sweep's acceptance (a run whose phase waits behind a busy consumer shows a long step).
# Loopback only; stops the stack at the end. E.g. make build && loadtest/cancel/expand.sh bin/greenflow /tmp/expand-trial
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(realpath "$1"); D=$2; NP=${3:-14234}; KP=${4:-19104}; HP=${5:-19476}
rm -rf "$D"; mkdir -p "$D"
G() { "$BIN" "$1" --state-dir "$D/state" "${@:2}"; }
log() { echo "$(date -u +%H:%M:%S.%N | cut -c1-12) $*" | tee -a $D/trial.log; }
nice -n 10 $BIN dev --state-dir $D/state --nats-port $NP --kafka-port $KP --console-addr "" --http-addr 127.0.0.1:$HP >> $D/dev.log 2>&1 & echo $! > $D/dev.pid
for i in $(seq 1 300); do curl -sf http://127.0.0.1:$HP/healthz >/dev/null 2>&1 && break; sleep 1; done; log healthy
S=$(G submit -f "$HERE/small.yaml" 2>&1 | tee -a $D/trial.log | grep -o 'small-[A-Za-z0-9-]*' | head -1); log "small submitted $S"
for i in $(seq 1 120); do G status $S 2>/dev/null | grep -q -E ' (warmup|measuring) ' && break; sleep 1; done; log "small's first run in warmup/measuring"
ID=$(G submit -f "$HERE/huge.yaml" --yes 2>&1 | tee -a $D/trial.log | grep -o 'huge-sweep-[A-Za-z0-9-]*' | head -1); log "submitted $ID"
for i in $(seq 1 300); do st=$(G list 2>/dev/null); echo "$st" | grep $S | grep -q -E ' (done|failed) ' && echo "$st" | grep $ID | grep -q -v submitted && break; sleep 2; done
log "$(G list 2>/dev/null | grep -E "$S|$ID")"
kill -INT $(cat $D/dev.pid); wait; log stopped
grep -a "$S\|$ID" $D/dev.log | grep -a '"run state"\|run state\|experiment accepted' | grep -a -v "$ID-r" | sed -E 's/^([^ \t]*).*"run_id": "([^"]*)", "state": "([^"]*)", "reason": "([^"]{0,80}).*/\1 \2 \3 \4/' | cut -c1-200 > $D/timeline.txt
