#!/usr/bin/env bash
# A single-node Slurm on this machine, for tests/sweep_slurm.rs.
#   start: installs Debian's slurm-wlm and munge if missing, generates a munge key, writes a
#          slurm.conf naming this host (hostname -s) with its cores and memory, starts munged,
#          slurmctld and slurmd, and waits until the node takes jobs.
#   stop:  cancels what is left, stops the three daemons, removes the state directory.
# Runs as root (CI): SlurmUser=root, no cgroups (proctrack/linuxproc, task/none), so it
# works in a container too.
set -euo pipefail
state=/tmp/dynloss-slurm
conf=/etc/slurm/slurm.conf

stop() {
  scancel --user=root >/dev/null 2>&1 || true
  for pid in "$state/slurmd.pid" "$state/slurmctld.pid" /run/munge/munged.pid; do
    [ -s "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  sleep 1
  rm -rf "$state"
}

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurm-wlm munge >/dev/null
  fi
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  # slurmd drains a node whose real memory is below the configured one: leave a margin.
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
  mkdir -p "$state/ctld" "$state/spool" /etc/slurm /etc/munge /var/lib/munge /var/log/munge /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
  if ! [ -s /run/munge/munged.pid ] || ! kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
    runuser -u munge -- /usr/sbin/munged
  fi
  cat > "$conf" <<CONF
ClusterName=dynloss-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  slurmctld
  slurmd
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "slurm: node $host ($cpus cores, $mem MiB) up"
      return 0
    fi
    sleep 1
  done
  echo "slurm: the node did not come up; logs:" >&2
  tail -n 20 "$state"/*.log >&2 || true
  sinfo >&2 || true
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
