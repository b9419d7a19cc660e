#!/usr/bin/env bash
# start_slurm.sh - install (if needed) and start a single-node Slurm cluster on localhost.
#
# For Debian 12 (bookworm) run as root, without systemd (PID 1 need not be systemd).
# Idempotent: installs only what is missing, rewrites slurm.conf only when it changes,
# starts only daemons that are not already running, then waits until `sinfo` shows the
# node idle. Every daemon it starts is recorded in $SLURM_LOCAL_DIR/started.pids;
# stop_slurm.sh stops exactly those PIDs (never by name).
#
# Environment knobs (all optional):
#   SLURM_LOCAL_DIR   state/spool/log/pid dir               (default /tmp/slurm)
#   SLURM_PARTITION   partition name (Default=YES)            (default debug)
#   SLURM_MEM_MB      RealMemory of the node in MB            (default 80% of detected, max detected-1024)
#   SLURM_TASK_PLUGIN task/none | task/affinity               (default task/affinity; task/none makes every
#                                                              srun --cpu-bind=... print a warning)
#   SLURM_WITH_DBD=1  also install MariaDB + slurmdbd so that `sacct` works (accounting_storage/slurmdbd)
#   SLURM_WAIT_S      seconds to wait for the node to become idle (default 60)
#   SLURM_SMOKE=1     run `srun true` after the node is idle
#   SLURM_FAKE_GPUS=N advertise N fake "gpu" GRES (char devices $SLURM_LOCAL_DIR/fakegpuI aliasing
#                     /dev/null) so --gpus=N / --gres=gpu:N jobs are scheduled; Slurm sets
#                     CUDA_VISIBLE_DEVICES=0.. for them. No real GPU: code still runs on the CPU.
#
# Exit status: 0 = the node is idle; 2 = not root / no apt-get and Slurm missing; 3 = the Debian packages could
# not be installed (no mirror reachable); 1 = anything else (see the logs in $SLURM_LOCAL_DIR/log).
# Copied from the project's shared tools/slurm-local (DAVS: exit statuses, KillWait=30, MinJobAge=3600).
set -euo pipefail

LOCAL_DIR=${SLURM_LOCAL_DIR:-/tmp/slurm}
PARTITION=${SLURM_PARTITION:-debug}
TASK_PLUGIN=${SLURM_TASK_PLUGIN:-task/affinity}
WITH_DBD=${SLURM_WITH_DBD:-0}
WAIT_S=${SLURM_WAIT_S:-60}
FAKE_GPUS=${SLURM_FAKE_GPUS:-0}
CONF_DIR=/etc/slurm
PIDS_FILE=$LOCAL_DIR/started.pids

log() { printf '[start_slurm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || { log "ERROR: must run as root"; exit 2; }

# A pid file is "live" when the PID exists and its command name matches.
pid_alive() { # pidfile expected-comm-prefix
  local f=$1 name=$2 pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/comm" ] || return 1
  [[ $(cat "/proc/$pid/comm") == "$name"* ]]
}
record() { # name pidfile
  local pid; pid=$(cat "$2")
  grep -qs "^$1 $pid$" "$PIDS_FILE" || echo "$1 $pid" >> "$PIDS_FILE"
}

# ---------------------------------------------------------------- 1. packages
PKGS=(munge slurmctld slurmd slurm-client)
[ "$WITH_DBD" = 1 ] && PKGS+=(slurmdbd mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { log "ERROR: ${missing[*]} missing and no apt-get"; exit 2; }
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # postinst scripts try to start services; on machines without systemd/with a
  # policy-rc.d that says 101 this is a no-op. Make sure it is a no-op everywhere,
  # so the daemons below are the only ones.
  restore_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; restore_policy=1
  fi
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    if ! { apt-get update -q >/dev/null && \
           apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }; then
      [ "$restore_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
      log "ERROR: could not install ${missing[*]} with apt-get"; exit 3
    fi
  fi
  [ "$restore_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

mkdir -p "$LOCAL_DIR"/{state,spool,log}
touch "$PIDS_FILE"
# forget recorded daemons that are gone (or whose PID now belongs to something else)
prune_pids() {
  local n pid keep=""
  while read -r n pid; do
    [ -r "/proc/$pid/comm" ] && [[ $(cat "/proc/$pid/comm") == "$n"* ]] && keep+="$n $pid"$'\n'
  done < "$PIDS_FILE"
  printf '%s' "$keep" > "$PIDS_FILE"
}
prune_pids

# ---------------------------------------------------------------- 2. munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating munge key"
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null; then mungekey -c -k /etc/munge/munge.key
  else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if pid_alive /run/munge/munged.pid munged && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running (pid $(cat /run/munge/munged.pid))"
else
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2*   # stale leftovers of a dead munged
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || die "munge does not work"
  record munged /run/munge/munged.pid
fi

# ---------------------------------------------------------------- 3. slurm.conf
HOST=$(hostname -s)
# slurmd -C prints the detected topology: NodeName=.. CPUs=.. Boards=.. ... RealMemory=..
DETECTED=$(slurmd -C | head -1)
DET_MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$DETECTED")
TOPO=$(sed -e 's/^NodeName=[^ ]* //' -e 's/ *RealMemory=[0-9]*//' <<<"$DETECTED")
MEM=${SLURM_MEM_MB:-$(( DET_MEM * 8 / 10 ))}
[ "$MEM" -le $(( DET_MEM - 1024 )) ] || MEM=$(( DET_MEM - 1024 ))
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$DETECTED")
DEF_MEM_PER_CPU=$(( MEM / CPUS / 2 )); [ $DEF_MEM_PER_CPU -gt 1000 ] && DEF_MEM_PER_CPU=1000

if [ "$WITH_DBD" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
  ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

GRES_LINE=""; NODE_GRES=""
if [ "$FAKE_GPUS" -gt 0 ]; then GRES_LINE="GresTypes=gpu"; NODE_GRES="Gres=gpu:${FAKE_GPUS}"; fi

NEW_CONF=$(cat <<EOF
# generated by start_slurm.sh - single node, localhost only
ClusterName=localcluster
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${LOCAL_DIR}/state
SlurmdSpoolDir=${LOCAL_DIR}/spool
SlurmctldPidFile=${LOCAL_DIR}/slurmctld.pid
SlurmdPidFile=${LOCAL_DIR}/slurmd.pid
SlurmctldLogFile=${LOCAL_DIR}/log/slurmctld.log
SlurmdLogFile=${LOCAL_DIR}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroup in this VM: linuxproc tracking, no task containment
ProctrackType=proctrack/linuxproc
TaskPlugin=${TASK_PLUGIN}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# jobs without --mem get this per CPU (otherwise they would take the whole node's memory)
DefMemPerCPU=${DEF_MEM_PER_CPU}
# keep finished jobs visible to squeue/scontrol for an hour: snakemake polls squeue at most every 180 s and
# needs MinJobAge >= 3 x slurm-init-seconds-before-status-checks, else it falls back to sacct; the tests read
# each job's record (scontrol show job) after the run (without slurmdbd, GPUs are not in jobcomp.txt)
MinJobAge=3600
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
# seconds between SIGTERM and SIGKILL when a job is cancelled or hits its time limit: Slurm's default (30), so
# training has the time a real cluster gives it to save its state
KillWait=30
${ACCT}
JobCompType=jobcomp/filetxt
JobCompLoc=${LOCAL_DIR}/log/jobcomp.txt
${GRES_LINE}
NodeName=${HOST} NodeAddr=127.0.0.1 ${TOPO} RealMemory=${MEM} ${NODE_GRES} State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
mkdir -p "$CONF_DIR"
CONF_CHANGED=0
if [ "$FAKE_GPUS" -gt 0 ]; then
  # gres/gpu drops File-less GPUs ("Removing file-less GPU") and rejects regular files:
  # give each fake GPU its own character device node (same major/minor as /dev/null).
  for i in $(seq 0 $(( FAKE_GPUS - 1 ))); do
    [ -c "$LOCAL_DIR/fakegpu$i" ] || mknod -m 666 "$LOCAL_DIR/fakegpu$i" c 1 3
  done
  NEW_GRES="NodeName=${HOST} Name=gpu File=${LOCAL_DIR}/fakegpu[0-$(( FAKE_GPUS - 1 ))]"
  if [ "$(cat "$CONF_DIR/gres.conf" 2>/dev/null)" != "$NEW_GRES" ]; then
    printf '%s\n' "$NEW_GRES" > "$CONF_DIR/gres.conf"; CONF_CHANGED=1
  fi
else
  rm -f "$CONF_DIR/gres.conf"
fi
if [ "$(cat "$CONF_DIR/slurm.conf" 2>/dev/null)" != "$NEW_CONF" ]; then
  log "writing $CONF_DIR/slurm.conf (node ${HOST}: ${TOPO} RealMemory=${MEM})"
  printf '%s\n' "$NEW_CONF" > "$CONF_DIR/slurm.conf"
  CONF_CHANGED=1
fi

# ---------------------------------------------------------------- 4. optional slurmdbd + MariaDB
if [ "$WITH_DBD" = 1 ]; then
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if pid_alive /run/mysqld/mysqld.pid mariadbd; then
    log "mariadbd already running"
  else
    log "starting mariadbd"
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
      --socket=/run/mysqld/mysqld.sock --bind-address=127.0.0.1 \
      --innodb-buffer-pool-size=128M --log-error="$LOCAL_DIR/log/mariadb.log" </dev/null >/dev/null 2>&1 &
    for _ in $(seq 100); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
    mariadb -e 'select 1' >/dev/null || die "mariadb did not start (see $LOCAL_DIR/log/mariadb.log)"
    record mariadbd /run/mysqld/mysqld.pid
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  DBD_CONF=$(cat <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=${LOCAL_DIR}/slurmdbd.pid
LogFile=${LOCAL_DIR}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmdbpass
EOF
)
  if [ "$(cat "$CONF_DIR/slurmdbd.conf" 2>/dev/null)" != "$DBD_CONF" ]; then
    printf '%s\n' "$DBD_CONF" > "$CONF_DIR/slurmdbd.conf"
  fi
  chmod 0600 "$CONF_DIR/slurmdbd.conf"   # slurmdbd refuses a world-readable config
  if pid_alive "$LOCAL_DIR/slurmdbd.pid" slurmdbd; then
    log "slurmdbd already running"
  else
    log "starting slurmdbd"
    slurmdbd   # daemonizes, writes PidFile
    for _ in $(seq 100); do sacctmgr -n show cluster >/dev/null 2>&1 && break; sleep 0.2; done
    record slurmdbd "$LOCAL_DIR/slurmdbd.pid"
  fi
fi

# ---------------------------------------------------------------- 5. slurmctld + slurmd
stop_pidfile() { # pidfile name: TERM the daemon of this pid file and wait for it
  pid_alive "$1" "$2" || return 0
  local pid; pid=$(cat "$1"); log "restarting $2 (pid $pid): configuration changed"
  kill -TERM "$pid"; for _ in $(seq 100); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
}
if [ "$CONF_CHANGED" = 1 ]; then
  # node definitions (CPUs, memory, GRES) need a restart, `scontrol reconfigure` is not enough
  stop_pidfile "$LOCAL_DIR/slurmd.pid" slurmd
  stop_pidfile "$LOCAL_DIR/slurmctld.pid" slurmctld
fi
if pid_alive "$LOCAL_DIR/slurmctld.pid" slurmctld; then
  log "slurmctld already running (pid $(cat "$LOCAL_DIR/slurmctld.pid"))"
else
  log "starting slurmctld"
  slurmctld   # daemonizes, writes SlurmctldPidFile
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
  scontrol ping | grep -q UP || die "slurmctld not up (see $LOCAL_DIR/log/slurmctld.log)"
  record slurmctld "$LOCAL_DIR/slurmctld.pid"
fi
if pid_alive "$LOCAL_DIR/slurmd.pid" slurmd; then
  log "slurmd already running (pid $(cat "$LOCAL_DIR/slurmd.pid"))"
else
  log "starting slurmd"
  slurmd -N "$HOST"
  for _ in $(seq 50); do pid_alive "$LOCAL_DIR/slurmd.pid" slurmd && break; sleep 0.1; done
  record slurmd "$LOCAL_DIR/slurmd.pid"
fi

if [ "$WITH_DBD" = 1 ]; then
  # register cluster/account/user once (idempotent); slurmctld registers itself too
  sacctmgr -i add cluster localcluster >/dev/null 2>&1 || true
  sacctmgr -i add account local Description=local Organization=local >/dev/null 2>&1 || true
  sacctmgr -i add user root DefaultAccount=local >/dev/null 2>&1 || true
fi

# ---------------------------------------------------------------- 6. wait for idle node
state=""
for _ in $(seq $(( WAIT_S * 4 ))); do
  state=$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -1 || true)
  case $state in
    idle|mixed|allocated|completing) break ;;
    down*|drain*|fail*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.25
done
case $state in idle|mixed|allocated|completing) ;; *)
  sinfo -N -l >&2 || true; die "node $HOST not ready after ${WAIT_S}s (state '$state'); logs in $LOCAL_DIR/log";;
esac
if [ "${SLURM_SMOKE:-0}" = 1 ]; then srun -t 1 -n 1 true || die "srun smoke test failed"; fi
log "slurm up: $(sinfo -h -o '%P %a %D %T %N')"
