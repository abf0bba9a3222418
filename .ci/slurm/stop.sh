#!/usr/bin/env bash
# Stop what .ci/slurm/start.sh started: cancel jobs, then slurmd, slurmctld, slurmdbd, mariadbd and
# (only if start.sh started it) munged. Keeps config, state and database; TTEXP_SLURM_PURGE=1 wipes them.
set -uo pipefail
BASE=${TTEXP_SLURM_BASE:-/tmp/ttexp-slurm}
export SLURM_CONF=$BASE/etc/slurm.conf
say() { echo "[slurm-stop $(date +%T)] $*"; }
alive() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }
stop() {  # pidfile command-name
  alive "$1" "$2" || { rm -f "$1"; return 0; }
  local pid; pid=$(cat "$1"); say "stopping $2 ($pid)"; kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"; rm -f "$1"
}
if alive "$BASE/run/slurmctld.pid" slurmctld; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    say "cancelling $jobs"; scancel $jobs 2>/dev/null   # word splitting wanted
    for _ in $(seq 100); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
stop "$BASE/run/slurmd.pid" slurmd
stop "$BASE/run/slurmctld.pid" slurmctld
stop "$BASE/run/slurmdbd.pid" slurmdbd
stop "$BASE/db/mariadbd.pid" mariadbd
[ -e "$BASE/run/munged.ours" ] && { stop /run/munge/munged.pid munged; rm -f "$BASE/run/munged.ours"; }
[ "${TTEXP_SLURM_PURGE:-0}" = 1 ] && rm -rf "${BASE:?}"/{state,spool,log,run,db}
say "stopped"
