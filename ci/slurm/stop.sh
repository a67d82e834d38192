#!/usr/bin/env bash
# Stop the test cluster that ci/slurm/start.sh started: cancel its jobs, end
# slurmd, slurmctld and munged (by the pids in their pid files, nothing else),
# remove /etc/slurm/slurm.conf (putting back a file start.sh set aside) and the
# cluster's folder. Safe to run when nothing is running.
#
#   sudo ci/slurm/stop.sh [--quiet] [--keep-logs]
set -euo pipefail

DIR=${GLIOSEG_SLURM_DIR:-/tmp/glioseg-slurm}
ETC_CONF=/etc/slurm/slurm.conf
QUIET=0
KEEP_LOGS=0
for arg in "$@"; do
    case $arg in
        --quiet) QUIET=1 ;;
        --keep-logs) KEEP_LOGS=1 ;;
        *) echo "usage: $0 [--quiet] [--keep-logs]" >&2; exit 2 ;;
    esac
done
say() { [[ $QUIET -eq 1 ]] || echo "stop.sh: $*"; }

[[ $(id -u) -eq 0 ]] || { echo "stop.sh: must run as root" >&2; exit 1; }

# The pid in FILE if it is alive and runs PROGRAM (a stale file can name a reused pid).
live_pid() {
    local file=$1 program=$2 pid
    [[ -s $file ]] || return 1
    pid=$(tr -dc 0-9 < "$file")
    [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$program"* ]] || return 1
    echo "$pid"
}

# Send SIGTERM to each daemon in PIDFILE:PROGRAM pairs at once, wait up to 5 s
# for them all, then SIGKILL whichever is left.
end_daemons() {
    local pair pids=() names=() pid i alive
    for pair in "$@"; do
        pid=$(live_pid "${pair%%:*}" "${pair##*:}") || continue
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid"); names+=("${pair##*:}")
    done
    for _ in $(seq 1 50); do
        alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [[ $alive -eq 1 ]] || break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if kill -0 "${pids[$i]}" 2>/dev/null; then
            kill -KILL "${pids[$i]}" 2>/dev/null || true
            say "killed ${names[$i]} (${pids[$i]})"
        else
            say "stopped ${names[$i]} (${pids[$i]})"
        fi
    done
}

# 1. Cancel this cluster's jobs while the controller still runs, so that no job
#    step (slurmstepd and the job's processes) outlives the daemons.
if live_pid "$DIR/slurmctld.pid" slurmctld >/dev/null && [[ -f $DIR/slurm.conf ]]; then
    export SLURM_CONF=$DIR/slurm.conf
    jobs=$(squeue -h -o %A 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        say "cancelling jobs: $(echo $jobs)"
        # shellcheck disable=SC2086
        scancel --full $jobs 2>/dev/null || true
        for _ in $(seq 1 40); do
            [[ -z $(squeue -h -o %A 2>/dev/null || true) ]] && break
            sleep 0.5
        done
    fi
fi

# 2. The daemons: node daemon and controller, then munge (they authenticate through it).
end_daemons "$DIR/slurmd.pid:slurmd" "$DIR/slurmctld.pid:slurmctld"
end_daemons "$DIR/munge/munged.pid:munged"

# 3. What start.sh wrote outside $DIR.
if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$DIR/slurm.conf" ]]; then
    rm -f "$ETC_CONF"
fi
if [[ -e $DIR/slurm.conf.orig || -L $DIR/slurm.conf.orig ]]; then
    [[ -e $ETC_CONF || -L $ETC_CONF ]] || mv "$DIR/slurm.conf.orig" "$ETC_CONF"
fi
if [[ -f $DIR/created-etc-slurm ]]; then
    rmdir /etc/slurm 2>/dev/null || true
fi
# proctrack/cgroup's (empty, once the jobs are gone) cgroup folders.
if [[ -s $DIR/host ]]; then
    for folder in /sys/fs/cgroup/*/"slurm_$(cat "$DIR/host")"; do
        [[ -d $folder ]] && find "$folder" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
fi

# 4. The cluster's folder (its logs too, unless asked to keep them).
if [[ -d $DIR ]]; then
    if [[ $KEEP_LOGS -eq 1 ]]; then
        find "$DIR" -mindepth 1 -maxdepth 1 ! -name log -exec rm -rf {} +
    else
        rm -rf "$DIR"
    fi
fi
say "done"
