#!/bin/bash
# cancel.sh BIN OUTDIR [NATSPORT KAFKAPORT HTTPPORT] — a dev stack, a 100,000-run sweep (huge.yaml) cancelled once it
# runs, a small experiment (small.yaml) submitted right behind the cancel, kill -9 of the dev stack 45 s after the
# cancel, a restart with the same state dir and no repeated cancel. Logs when the small experiment is accepted and
# past provisioning, and the time from the restart until every run of the sweep is final (OUTDIR/trial.log).
# Loopback only; stops the stack at the end. E.g. make build && loadtest/cancel/cancel.sh bin/greenflow /tmp/cancel-trial
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(realpath "$1"); D=$2; NP=${3:-14234}; KP=${4:-19104}; HP=${5:-19476}
rm -rf "$D"; mkdir -p "$D"
G() { "$BIN" "$1" --state-dir "$D/state" "${@:2}"; }
ts() { date +%s.%N; }
log() { echo "$(date -u +%H:%M:%S.%N | cut -c1-12) $*" | tee -a $D/trial.log; }
start() { nice -n 10 $BIN dev --state-dir $D/state --nats-port $NP --kafka-port $KP --console-addr "" --http-addr 127.0.0.1:$HP >> $D/dev.log 2>&1 & echo $! > $D/dev.pid;
  for i in $(seq 1 300); do curl -sf http://127.0.0.1:$HP/healthz >/dev/null 2>&1 && return 0; sleep 1; done; log "not healthy"; return 1; }
row() { G list 2>/dev/null | grep "$1"; }
start; log "healthy"
ID=$(G submit -f "$HERE/huge.yaml" --yes 2>&1 | tee -a $D/trial.log | grep -o 'huge-sweep-[A-Za-z0-9-]*' | head -1)
log "submitted $ID"
for i in $(seq 1 600); do r=$(row $ID); case "$r" in *running*) break;; esac; sleep 2; done
log "running: $r"
T0=$(ts); G cancel $ID >> $D/trial.log 2>&1; log "cancel accepted"
S=$(G submit -f "$HERE/small.yaml" 2>&1 | tee -a $D/trial.log | grep -o 'small-[A-Za-z0-9-]*' | head -1); TS=$(ts)
log "small submitted $S"
acc=""; prov=""
while :; do
  now=$(ts); el=$(echo "$now - $T0" | bc)
  st=$(G status $S 2>/dev/null)
  if [ -z "$acc" ] && ! echo "$st" | head -3 | grep -q submitted; then acc=$(echo "$now - $TS" | bc); log "small accepted (left submitted) after ${acc}s: $(echo "$st" | head -2 | tr '\n' ' ')"; fi
  if [ -z "$prov" ] && echo "$st" | grep -q -E 'baseline|warmup|measuring'; then prov=$(echo "$now - $TS" | bc); log "small's first run past provisioning after ${prov}s"; fi
  if (( $(echo "$el > 45" | bc) )); then break; fi
  sleep 1
done
log "list before kill: $(row $ID)"
kill -9 $(cat $D/dev.pid); sleep 1; log "killed -9"
T1=$(ts); start; log "restarted, healthy after $(echo "$(ts) - $T1" | bc)s"
for i in $(seq 1 240); do
  r=$(row $ID); log "$r"
  if echo "$r" | awk '{exit !($4+$5+$6==$3 && $3>0)}'; then log "all runs final after $(echo "$(ts) - $T1" | bc)s from restart"; break; fi
  sleep 5
done
log "final list row: $(row $ID)"
kill -INT $(cat $D/dev.pid); wait
log "stopped"
