#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, for testing the pipeline's
# SLURM profile: munge, slurmctld and slurmd from Debian's packages, one node
# with every CPU and one (fake) `gpu` gres, partitions `main` (default) and `gpu`.
#
#   sudo ci/slurm/start.sh        # installs the packages if missing; prints sinfo
#   sudo ci/slurm/stop.sh         # kills the daemons, removes what start wrote
#
# Running it again restarts the cluster cleanly (all jobs and state are lost).
# Everything lives in $GLIOSEG_SLURM_DIR (default /tmp/glioseg-slurm) except
# /etc/slurm/slurm.conf, a link to the config there: the plugin's job step drops
# every SLURM_* variable (SLURM_CONF too) before its nested `srun`, which then
# reads the default path. stop.sh removes the link and restores any file it
# replaced. Needs root (the daemons run as root and bind their default ports).
set -euo pipefail

DIR=${GLIOSEG_SLURM_DIR:-/tmp/glioseg-slurm}
HERE=$(cd "$(dirname "$0")" && pwd)
ETC_CONF=/etc/slurm/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)

die() { echo "start.sh: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts the SLURM daemons)"

# 1. Packages (Debian/Ubuntu). apt-get update only when the first try fails.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || die "slurmctld/slurmd/munge missing and no apt-get to install them"
    echo "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; } \
        || die "could not install ${PACKAGES[*]} with apt-get"
fi

# 2. A clean slate: stop whatever an earlier start left running.
"$HERE/stop.sh" --quiet

mkdir -p "$DIR"/{state,spool,log}
install -d -o munge -g munge -m 0700 "$DIR/munge"
chmod 0755 "$DIR"

# How slurmd tracks a job's processes. proctrack/cgroup is what production
# clusters use (and what decides which processes SLURM's signals reach: only the
# job step's tasks, not their children); it needs cgroup v1's freezer. Otherwise
# proctrack/linuxproc (by parent process). GLIOSEG_SLURM_PROCTRACK overrides.
PROCTRACK=${GLIOSEG_SLURM_PROCTRACK:-}
if [[ -z $PROCTRACK ]]; then
    if [[ -d /sys/fs/cgroup/freezer && -w /sys/fs/cgroup/freezer ]]; then PROCTRACK=cgroup; else PROCTRACK=linuxproc; fi
fi
[[ $PROCTRACK == cgroup || $PROCTRACK == linuxproc ]] || die "GLIOSEG_SLURM_PROCTRACK must be cgroup or linuxproc"

HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MB=$((MEM_MB * 9 / 10))        # leave room for the OS and the daemons
DEF_MB=$((REAL_MB / CPUS / 2))      # a job that names no memory gets half its CPUs' share

# 3. munge, with its own key and socket in $DIR (no /etc/munge, /run/munge needed).
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chown munge:munge "$DIR/munge/munge.key"
chmod 0400 "$DIR/munge/munge.key"
SOCKET="$DIR/munge/munge.socket.2"
runuser -u munge -- munged --force --key-file="$DIR/munge/munge.key" --socket="$SOCKET" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
    || die "munged did not start; see $DIR/munge/munged.log"

# 4. SLURM's configuration.
cat > "$DIR/slurm.conf" <<EOF
# Written by ci/slurm/start.sh: a one-node test cluster. Do not use in production.
ClusterName=glioseg-ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/$PROCTRACK
# task/affinity, as on most clusters: the plugin's job step runs `srun --cpu-bind=q`, and with
# task/none every job log said "srun: cluster configuration lacks support for cpu binding".
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue for 5 minutes: the status command needs them.
MinJobAge=300
# Short kill grace and quick time-limit checks keep the tests fast.
KillWait=10
OverTimeLimit=0
EnforcePartLimits=ALL
DefMemPerCPU=$DEF_MB
SchedulerType=sched/backfill
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MB Gres=gpu:1 State=UNKNOWN
# Two partitions on the one node, named as profiles/slurm expects: CPU jobs go to
# main, training and inference to gpu.
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
# cgroup v1, and only for tracking: no CPU or memory confinement on a test node.
cat > "$DIR/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF
echo "$HOST" > "$DIR/host"
# A gpu gres needs a File=, or the node drains; /dev/null stands in for the device.
cat > "$DIR/gres.conf" <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu Count=1 File=/dev/null
EOF

# The default path, for the clients and the plugin's nested srun. A file that is
# not ours is kept aside and put back by stop.sh.
if [[ ! -d /etc/slurm ]]; then
    mkdir -p /etc/slurm
    touch "$DIR/created-etc-slurm"
fi
if [[ -e $ETC_CONF || -L $ETC_CONF ]]; then
    mv "$ETC_CONF" "$DIR/slurm.conf.orig"
fi
ln -s "$DIR/slurm.conf" "$ETC_CONF"

# 5. The daemons (each forks into the background and writes its pid file).
slurmctld -f "$DIR/slurm.conf" -c -i || die "slurmctld did not start; see $DIR/log/slurmctld.log"
slurmd -f "$DIR/slurm.conf" || die "slurmd did not start; see $DIR/log/slurmd.log"

# 6. Wait until the node takes jobs.
for _ in $(seq 1 60); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -n 1 || true)
    [[ $state == idle ]] && break
    sleep 0.5
done
if [[ ${state:-} != idle ]]; then
    echo "start.sh: the node is not idle (state: '${state:-none}'); last log lines:" >&2
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    exit 1
fi
sinfo
sinfo -h -N -o "node %N: %c CPUs, %m MB, gres %G" | sort -u
echo "process tracking: proctrack/$PROCTRACK"
