#!/usr/bin/env bash
# Start a one-node SLURM with accounting for the `slurm` tests (Debian packages, root, no systemd):
#   munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd; node $(hostname -s), partition `debug`.
#   sudo .ci/slurm/start.sh && export SLURM_CONF=/tmp/ttexp-slurm/etc/slurm.conf
# Idempotent and non-interactive: installs only missing packages (--no-install-recommends), writes
# the config, starts only daemons that are not running (restarts the SLURM ones when the config
# changed) and returns once the node is idle. Exit 0 = ready; non-zero = the reason on stderr.
# Why each setting: accounting (slurmdbd) because submitit learns of a job SLURM killed (scancel,
# time limit) only through sacct; cred_expire=10 and bf_interval=1,sched_interval=2 because a
# requeued job otherwise waits ~2.5 min before it runs again (~12 s with them).
# Knobs: TTEXP_SLURM_BASE (/tmp/ttexp-slurm: config, state, logs, database).
set -euo pipefail
BASE=${TTEXP_SLURM_BASE:-/tmp/ttexp-slurm}
export SLURM_CONF=$BASE/etc/slurm.conf
START=$(date +%s.%N)
say() { echo "[slurm-start $(date +%T)] $*"; }
alive() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }
retry() { local tries=$1; shift; for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; "$@" >/dev/null; }
since() { python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$1"; }

[ "$(id -u)" = 0 ] || { echo "slurm-start: needs root (apt-get, munge key, daemons)" >&2; exit 2; }

# packages ----------------------------------------------------------------------------------------
need=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge \
            slurmdbd:slurmdbd mariadbd:mariadb-server; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi
mkdir -p "$BASE"/{etc,state,spool,log,run,db}

# munge -------------------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --force 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
fi
munge_works() { munge -n | unmunge; }
if ! munge_works >/dev/null 2>&1; then
  say "starting munged"
  install -d -o munge -g munge -m 0755 /run/munge
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
  runuser -u munge -- /usr/sbin/munged && touch "$BASE/run/munged.ours"
  retry 50 munge_works
fi

# slurm.conf --------------------------------------------------------------------------------------
host=$(hostname -s)
node=$(slurmd -C | head -n1)                     # NodeName=vm CPUs=2 ... RealMemory=24105
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
# 95% of the memory: a node that reports less than configured registers as "Low RealMemory"
node=$(sed -e "s/^NodeName=$host /NodeName=$host NodeAddr=127.0.0.1 /" \
           -e "s/RealMemory=[0-9]*/RealMemory=$((mem * 95 / 100))/" <<<"$node")
cat > "$SLURM_CONF.new" <<CONF
# written by ttexp's .ci/slurm/start.sh
ClusterName=ttexp
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
EnforcePartLimits=ALL
MinJobAge=600
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
changed=0
if cmp -s "$SLURM_CONF.new" "$SLURM_CONF"; then rm "$SLURM_CONF.new"; else mv "$SLURM_CONF.new" "$SLURM_CONF"; changed=1; fi
# sbatch/sacct without SLURM_CONF (submitit's own calls, a user's shell); a real file is left alone
mkdir -p /etc/slurm
if [ -L /etc/slurm/slurm.conf ] || [ ! -e /etc/slurm/slurm.conf ]; then ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf; fi

# accounting: MariaDB + slurmdbd ------------------------------------------------------------------
install -d -o mysql -g mysql /run/mysqld
db_works() { mariadb -uroot -e 'select 1'; }
if ! db_works >/dev/null 2>&1; then
  [ -d "$BASE/db/mysql" ] || mariadb-install-db --no-defaults --user=mysql --datadir="$BASE/db" \
      --auth-root-authentication-method=socket --skip-test-db >"$BASE/log/mariadb-install.log" 2>&1
  say "starting mariadbd"
  setsid mariadbd --no-defaults --user=mysql --datadir="$BASE/db" --socket=/run/mysqld/mysqld.sock \
      --pid-file="$BASE/db/mariadbd.pid" --skip-networking --log-error="$BASE/log/mariadb.err" \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
  retry 150 db_works
fi
cat > "$BASE/etc/slurmdbd.conf.new" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$BASE/run/slurmdbd.pid
LogFile=$BASE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=ttexp_slurm_acct
CONF
chmod 600 "$BASE/etc/slurmdbd.conf.new"
mv "$BASE/etc/slurmdbd.conf.new" "$BASE/etc/slurmdbd.conf"  # slurmdbd finds it beside SLURM_CONF
if ! alive "$BASE/run/slurmdbd.pid" slurmdbd; then
  say "starting slurmdbd"
  slurmdbd
  retry 150 sacctmgr -n show cluster
fi

# slurmctld + slurmd ------------------------------------------------------------------------------
stop() { local pid; pid=$(cat "$1"); kill "$pid" 2>/dev/null || true
         for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done; kill -9 "$pid" 2>/dev/null || true; }
if [ "$changed" = 1 ]; then
  alive "$BASE/run/slurmd.pid" slurmd && stop "$BASE/run/slurmd.pid"
  alive "$BASE/run/slurmctld.pid" slurmctld && stop "$BASE/run/slurmctld.pid"
fi
alive "$BASE/run/slurmctld.pid" slurmctld || { say "starting slurmctld"; slurmctld -f "$SLURM_CONF"; }
alive "$BASE/run/slurmd.pid" slurmd || { say "starting slurmd"; slurmd -f "$SLURM_CONF"; }

# wait until the node takes jobs ------------------------------------------------------------------
state=
for _ in $(seq 150); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n1 || true)
  case $state in
    idle|mixed|allocated|completing) break ;;
    down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
case $state in
  idle|mixed|allocated|completing) ;;
  *) echo "slurm-start: node $host is '$state', not idle; logs in $BASE/log/" >&2; exit 1 ;;
esac
say "ready: node $host $state in $(since "$START") s; export SLURM_CONF=$SLURM_CONF"
