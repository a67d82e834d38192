# The train rule's walltime timer (docs/cluster.md, section 6). The rule's shell command
# sources it just before it `exec`s the training:
#
#     . walltime_timer.sh SIGNAL_SECONDS; exec glioseg … train …
#
# Inside a SLURM job with a time limit it reads the job's end time from squeue once, then
# checks every 2 s and sends SIGTERM to the training SIGNAL_SECONDS before that end: glioseg
# saves its state and exits 75, and Snakemake's retries submit a job that resumes. Outside
# SLURM, with SIGNAL_SECONDS 0, or where squeue cannot be run or gives no end time, it starts
# nothing, and a job is killed at its limit.
#
# Sourced, not run: `$$` is then the rule's own bash, which `exec` turns into glioseg (or into
# torchrun, which passes the signal to its workers), so the timer signals the training itself
# and stays its child, inside the job step. Not `sbatch --signal`: SLURM's warning also reaches
# the job step's Snakemake, which then reports a finished training failed (docs/decisions.md).

signal_seconds=$1
if [ -n "${SLURM_JOB_ID:-}" ] && [ "$signal_seconds" -gt 0 ] \
    && end=$(date -d "$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null)" +%s 2>/dev/null) \
    && [ "$end" -gt "$(date +%s)" ]; then
    (while kill -0 $$; do [ $(date +%s) -lt $((end - signal_seconds)) ] || { kill -TERM $$; exit; }; sleep 2; done) \
        </dev/null >/dev/null 2>&1 &
fi
