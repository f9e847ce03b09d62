#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the current user: Debian's slurm-wlm (slurmctld, slurmd) with its
# own munged, every file (slurm.conf, munge key and socket, spool, state, logs) under one folder outside the
# repository, $LOCAL_SLURM_DIR (default ~/.local/state/ffrun-slurm). Accounting is off (no slurmdbd).
#
#   scripts/local_slurm.sh start     install the packages when missing (apt-get), write the config, start the daemons,
#                                    wait until the node is idle; running it again on a running cluster changes nothing
#                                    (a fresh start begins with an empty queue: jobs of an earlier cluster are dropped)
#   scripts/local_slurm.sh stop      cancel the cluster's jobs and stop the daemons (the folder stays; start reuses it)
#   scripts/local_slurm.sh status    one line: up or down, and why; exit 0 when up
#   scripts/local_slurm.sh env       the line to eval so sbatch, squeue and ffrun's SLURM launcher reach it:
#                                    eval "$(scripts/local_slurm.sh env)"
#
# The node has LOCAL_SLURM_CPUS CPUs (default 2) and LOCAL_SLURM_MEM_MB of memory (default: what the machine has,
# at most 16000), one partition, `debug`, the default. Ports: LOCAL_SLURM_PORT (slurmctld, default 6817) and the next
# one (slurmd).
set -euo pipefail

DIR=${LOCAL_SLURM_DIR:-${HOME:-/root}/.local/state/ffrun-slurm}
CPUS=${LOCAL_SLURM_CPUS:-2}
PORT=${LOCAL_SLURM_PORT:-6817}
CONF=$DIR/etc/slurm.conf
SOCKET=$DIR/munge/munge.socket
HOST=$(hostname -s)
USER_NAME=$(id -un)
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "local_slurm: $*"; }
die() { echo "local_slurm: error: $*" >&2; exit 1; }

installed() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
  && command -v sbatch >/dev/null; }

install_packages() {
  installed && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "slurm-wlm is not installed and installing it needs root (sudo not found)"
    sudo=(sudo -n)
  fi
  say "installing ${PACKAGES[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$DIR/apt.log" 2>&1; then
    "${sudo[@]}" apt-get update -q >>"$DIR/apt.log" 2>&1 \
      && "${sudo[@]}" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$DIR/apt.log" 2>&1 \
      || die "apt-get could not install ${PACKAGES[*]} (see $DIR/apt.log)"
  fi
  installed || die "the packages installed, but slurmctld, slurmd, munged or sbatch is still missing"
}

memory_mb() {
  local mb
  mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  echo "${LOCAL_SLURM_MEM_MB:-$(( mb < 16000 ? mb : 16000 ))}"
}

write_config() {
  mkdir -p "$DIR"/{etc,munge,state,spool,log,run}
  chmod 700 "$DIR/munge"
  if [ ! -s "$DIR/munge/munge.key" ]; then
    (umask 077; head -c 1024 /dev/urandom >"$DIR/munge/munge.key")
  fi
  # slurm.conf: written again at every start (so a change of CPUs or port takes effect), atomically
  cat >"$CONF.tmp" <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster on $HOST for $USER_NAME.
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$USER_NAME
SlurmdUser=$USER_NAME
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
MinJobAge=600
KillWait=30
SlurmdTimeout=300
InactiveLimit=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$(memory_mb) State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  mv "$CONF.tmp" "$CONF"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

munge_up() { pid_alive "$DIR/run/munged.pid" && [ -S "$SOCKET" ]; }

controller_up() { SLURM_CONF=$CONF timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; }

node_state() { SLURM_CONF=$CONF timeout 5 sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1; }

start() {
  mkdir -p "$DIR"
  install_packages
  if munge_up && controller_up && pid_alive "$DIR/run/slurmd.pid"; then
    say "already running ($CONF)"
    return 0
  fi
  write_config
  if ! munge_up; then
    munged --force --socket="$SOCKET" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
      --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
      || die "munged did not start (see $DIR/log/munged.log)"
  fi
  for _ in $(seq 50); do munge_up && break; sleep 0.1; done
  munge_up || die "munged did not start (see $DIR/log/munged.log)"
  export SLURM_CONF=$CONF
  pid_alive "$DIR/run/slurmctld.pid" || slurmctld -c -f "$CONF" || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
  pid_alive "$DIR/run/slurmd.pid" || slurmd -f "$CONF" || die "slurmd did not start (see $DIR/log/slurmd.log)"
  local state="" name
  for _ in $(seq 60); do
    for name in munged slurmctld slurmd; do
      pid_alive "$DIR/run/$name.pid" || die "$name stopped as it started (see $DIR/log/$name.log)"
    done
    state=$(node_state || true)
    case $state in
      idle*|mixed*|allocated*) break ;;
      down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  case $state in
    idle*|mixed*|allocated*) say "running: node $HOST ($CPUS CPUs, $(memory_mb) MB), partition debug; config $CONF" ;;
    *) die "the node did not come up (state '${state:-unknown}'; see $DIR/log/slurmctld.log and slurmd.log)" ;;
  esac
}

stop() {
  local name pidfile pid
  if controller_up; then
    SLURM_CONF=$CONF timeout 20 scancel --user="$USER_NAME" >/dev/null 2>&1 || true
  fi
  for name in slurmd slurmctld munged; do
    pidfile=$DIR/run/$name.pid
    if pid_alive "$pidfile"; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  say "stopped"
}

status() {
  if ! installed; then echo "local_slurm: down: slurm-wlm is not installed (scripts/local_slurm.sh start installs it)"; return 1; fi
  if ! munge_up; then echo "local_slurm: down: munged is not running (scripts/local_slurm.sh start)"; return 1; fi
  if ! controller_up; then echo "local_slurm: down: slurmctld does not answer (scripts/local_slurm.sh start)"; return 1; fi
  local state
  state=$(node_state || true)
  case $state in
    idle*|mixed*|allocated*|completing*) echo "local_slurm: up: node $HOST $state; SLURM_CONF=$CONF"; return 0 ;;
    *) echo "local_slurm: down: node $HOST is '${state:-unknown}' (see $DIR/log/slurmd.log)"; return 1 ;;
  esac
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
