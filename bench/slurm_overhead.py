"""What running through SLURM costs: the same small study locally and on the test cluster, one after the other.

The study is config.yaml cut to folds 0 and 1 and 10 epochs (the cut of issue 16).
It runs first locally (``snakemake --cores 2``), then through the one-node test
cluster of ci/slurm/start.sh (``--profile profiles/slurm --workflow-profile
profiles/slurm-ci``) in each variant asked for, never two at once. For every run
it records the wall time, its ratio to the local run, the SLURM jobs (sbatch
submissions), and whether the outputs equal the local run's (scores.csv to the
byte, each fold's history.csv but its wall-time column). For every SLURM job it
records when it was submitted, started and ended (``squeue``; the cluster keeps
finished jobs for 5 minutes), what it reserved, when the login-node Snakemake
noticed its end (the status-check latency), and, for group jobs, when each member
started and finished inside it (the job's log).

From the measured per-stage cost it estimates the overhead of a study whose
trainings take an hour (an estimate, stated as such in the report).

Run as root (it starts and stops the test cluster unless one is running):

    .venv/bin/python bench/slurm_overhead.py                 # local, SLURM, SLURM with per-fold groups
    .venv/bin/python bench/slurm_overhead.py --init 1 10 40  # also the status-check start interval

and it writes bench/results/slurm_overhead.md (``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml
from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "slurm"
CI_PROFILE = ROOT / "profiles" / "slurm-ci"
FOLD_GROUPS = ROOT / "profiles" / "slurm-fold-groups"
OUT = Path(__file__).parent / "results" / "slurm_overhead.md"
SUBMITTED = re.compile(r"^Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", re.M)
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")
# The plugin's status checks (2.8.0): the first after the start interval, then 10 s longer each
# time no job finished, up to 180 s; back to the start interval whenever one did.
BACKOFF_STEP, BACKOFF_CAP = 10, 180


def stamp(text: str) -> float:
    return datetime.strptime(text, "%a %b %d %H:%M:%S %Y").timestamp()


@dataclass
class SlurmJob:
    slurm_id: str
    log: Path
    members: list[str]  # Snakemake job ids of the rules it ran
    rules: list[str] = field(default_factory=list)
    submitted: float = 0.0
    start: float = 0.0
    end: float = 0.0
    noticed: float = 0.0
    limit: str = ""
    memory: str = ""
    cpus: str = ""
    state: str = ""
    member_times: list[tuple[str, float, float]] = field(default_factory=list)  # (rule, start, end) in the job

    @property
    def latency(self) -> float:
        return self.noticed - self.end


@dataclass
class Run:
    name: str
    seconds: float
    output: str
    jobs: list[SlurmJob]
    identical: bool | None = None


def study_config(epochs: int, folds: list[int]) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for experiment in config["experiments"].values():
        experiment.update(epochs=epochs, folds=folds)
    return config


def environment() -> dict[str, str]:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")


def snakemake(workdir: Path, *args: str, timeout: int = 1800) -> tuple[float, str]:
    command = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", "--snakefile",
               str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(workdir / "study.yaml"), *args]
    started = time.monotonic()
    done = subprocess.run(command, cwd=workdir, env=environment(), capture_output=True, text=True)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    (workdir / "snakemake.out").write_text(output)
    if done.returncode != 0:
        raise SystemExit(f"snakemake failed in {workdir} ({done.returncode}):\n{output[-4000:]}")
    return seconds, output


def fold_group_args() -> list[str]:
    """profiles/slurm-fold-groups' groups, on the command line: the test cluster's settings take the
    --workflow-profile slot, and Snakemake takes one profile of each kind."""
    settings = yaml.safe_load((FOLD_GROUPS / "config.yaml").read_text())
    return ["--groups", *settings["groups"], "--group-components", *settings["group-components"]]


def parse_jobs(output: str) -> list[SlurmJob]:
    """Every sbatch submission of a run, with the Snakemake job ids it ran and when it was submitted."""
    jobs, groups, in_group, last_stamp = [], [], False, 0.0
    for line in output.splitlines():
        if "] Group job " in line:  # a group's block: its members' jobid lines follow, indented
            groups.append([])
            in_group = True
        elif found := STAMP.match(line):  # a job block at the top level ends a group's
            last_stamp = stamp(found.group(1))
            in_group = False
        elif in_group and (found := re.match(r"^\s+jobid: (\d+)$", line)):
            groups[-1].append(found.group(1))
        elif found := SUBMITTED.match(line):
            name, slurm_id, log = found.groups()
            members = [name] if name.isdigit() else groups.pop(0)  # a group job is named by its uuid
            jobs.append(SlurmJob(slurm_id, Path(log), members, submitted=last_stamp))
            in_group = False
    finished, current = {}, 0.0
    for line in output.splitlines():
        if found := STAMP.match(line):
            current = stamp(found.group(1))
        elif found := re.match(r"^Finished jobid: (\d+) \(Rule: (\w+)\)", line):
            finished[found.group(1)] = (current, found.group(2))
    for job in jobs:
        job.noticed = max(finished[m][0] for m in job.members)
        job.rules = [finished[m][1] for m in job.members]
    return jobs


def group_member_times(log: str) -> list[tuple[str, float, float]]:
    """(rule, start, end) of each member a group job's Snakemake ran, from its log: it prints
    "rule X:" when it starts a member and "Finished jobid: N (Rule: X)" when it is done (the
    member's own Snakemake, in its job step, says "localrule X:" and finishes just before)."""
    members, current = [], 0.0
    for line in log.splitlines():
        if found := STAMP.match(line):
            current = stamp(found.group(1))
        elif found := re.match(r"^rule (\w+):", line):
            members.append([found.group(1), current, float("inf")])
        elif members and re.match(r"^Finished jobid: \d+ \(Rule: \w+\)", line):
            members[-1][2] = current
    return [tuple(member) for member in members]


def slurm_details(job: SlurmJob) -> None:
    done = subprocess.run(["squeue", "-h", "-t", "all", "-j", job.slurm_id, "-o", "%S|%e|%l|%m|%C|%T"],
                          capture_output=True, text=True)
    start, end, job.limit, job.memory, job.cpus, job.state = done.stdout.strip().split("|")
    job.start, job.end = (datetime.fromisoformat(value).timestamp() for value in (start, end))
    if len(job.members) > 1:
        job.member_times = group_member_times(job.log.read_text())


def same_outputs(run_dir: Path, local_dir: Path, folds: list[int]) -> bool:
    scores = "results/summary/scores.csv"
    if (run_dir / scores).read_bytes() != (local_dir / scores).read_bytes():
        return False
    for experiment in yaml.safe_load((local_dir / "study.yaml").read_text())["experiments"]:
        for fold in folds:
            path = f"results/models/{experiment}/fold{fold}/history.csv"
            frames = [pd.read_csv(root / path).drop(columns="seconds") for root in (run_dir, local_dir)]
            if not frames[0].equals(frames[1]):
                return False
    return True


def poll_times(start_interval: int, until: float) -> list[float]:
    """The plugin's status checks after a reset, while no job finishes, up to ``until`` seconds."""
    times, interval, now = [], start_interval, 0.0
    while now < until:
        now += interval
        times.append(now)
        interval = min(interval + BACKOFF_STEP, BACKOFF_CAP)
    return times


def noticed_after(duration: float, start_interval: int) -> float:
    """How long after it ends a job of ``duration`` s is noticed, if no other job resets the back-off."""
    return next(t for t in poll_times(start_interval, duration + BACKOFF_CAP + start_interval) if t >= duration) - duration




def start_cluster() -> bool:
    """Start the test cluster unless one answers; True if this script started it."""
    if shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0:
        return False
    subprocess.run(["bash", str(ROOT / "ci/slurm/start.sh")], check=True, capture_output=True, timeout=300)
    return True


def report(runs: list[Run], args: argparse.Namespace, init_default: int, loads: list[str]) -> str:
    local = runs[0]
    lines = [
        "# SLURM overhead: the same small study locally and through the test cluster",
        "",
        f"Machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB, no GPU; the one-node test "
        f"cluster of ci/slurm/start.sh on the same machine; {time.strftime('%Y-%m-%d')}; "
        f"`{' '.join(['bench/slurm_overhead.py', *sys.argv[1:]])}`. Runs one after another; load average before "
        f"each: {', '.join(loads)} (other work shared the machine, so single runs are noisy).",
        "",
        f"Study: config.yaml with folds {args.folds} and {args.epochs} epochs. Local: `snakemake --cores 2`. "
        f"SLURM: `--profile profiles/slurm --workflow-profile profiles/slurm-ci` (status checks start after "
        f"{init_default} s there), plus what the run's name says.",
        "",
        "| run | wall | ratio to local | SLURM jobs | outputs equal local's |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        equal = "—" if run.identical is None else ("yes" if run.identical else "**no**")
        lines.append(f"| {run.name} | {run.seconds:.0f} s | {run.seconds / local.seconds:.2f} | "
                     f"{len(run.jobs) if run.jobs else '—'} | {equal} |")
    for run in runs[1:]:
        origin = min(job.submitted for job in run.jobs)
        lines += ["", f"## {run.name}: its SLURM jobs (seconds from the first submission)", "",
                  "| job | rules | submitted | started | ended | noticed | status latency | reserved |",
                  "|---|---|---|---|---|---|---|---|"]
        for job in run.jobs:
            lines.append(f"| {job.slurm_id} | {', '.join(job.rules)} | {job.submitted - origin:.0f} | "
                         f"{job.start - origin:.0f} | {job.end - origin:.0f} | {job.noticed - origin:.0f} | "
                         f"{job.latency:.0f} s | {job.cpus} CPU, {job.memory}, {job.limit} |")
        for job in run.jobs:
            if job.member_times:
                members = "; ".join(f"{rule} {start - job.start:.0f}–{end - job.start:.0f} s"
                                    for rule, start, end in job.member_times)
                lines.append(f"\nGroup job {job.slurm_id}, members from its start: {members}.")
    lines += ["", estimate(runs, init_default)]
    return "\n".join(lines) + "\n"


def estimate(runs: list[Run], init_default: int) -> str:
    """Per-stage cost from the measured runs, and what it means for hour-long trainings."""
    local = runs[0]
    plain = next(run for run in runs[1:] if run.name == "slurm")
    waves = sorted({job.submitted for job in plain.jobs})
    stages = len(waves)
    extra = plain.seconds - local.seconds
    latency = sum(max(job.latency for job in plain.jobs if job.submitted == wave) for wave in waves)
    startup = sum(min(job.start for job in plain.jobs if job.submitted == wave) - wave for wave in waves)
    fixed = (extra - latency) / stages
    hour = 3600
    # An hour-long training is noticed at the plugin's next check: at most BACKOFF_CAP s after it ends,
    # on average half that (its end falls anywhere in the capped interval).
    mean_hour_latency, worst_hour_latency = BACKOFF_CAP / 2, BACKOFF_CAP
    short_latency = latency / stages
    total_mean = stages * fixed + (stages - 1) * short_latency + mean_hour_latency
    total_worst = stages * fixed + (stages - 1) * short_latency + worst_hour_latency
    return "\n".join([
        "## Per-stage cost, and an estimate for hour-long trainings",
        "",
        f"The plain SLURM run has {stages} stages on its critical path (submission waves). It took "
        f"{extra:.0f} s longer than the local run: {latency:.0f} s of that is status-check latency (job ended → "
        f"login-node Snakemake noticed, the slowest job of each wave), {startup:.0f} s submission to start, and the "
        f"rest job start-up (the batch script's Snakemake and the job step's second Snakemake before the rule runs: "
        f"about {fixed:.0f} s a stage, latency aside).",
        "",
        f"**Estimate, not a measurement:** a study whose trainings take an hour has the same {stages} stages; each "
        f"pays about {fixed:.0f} s of start-up, the short ones about {short_latency:.0f} s of status latency as here, "
        f"and the training's end is noticed at the plugin's next check, which by then comes every {BACKOFF_CAP} s "
        f"(on average {mean_hour_latency:.0f} s late, at worst {worst_hour_latency} s). That is about "
        f"{total_mean:.0f} s (at worst {total_worst:.0f} s) on top of at least {hour} s of training: "
        f"{100 * total_mean / hour:.1f} % ({100 * total_worst / hour:.1f} % at worst), less for longer trainings "
        f"and less again with per-fold train → infer groups (one stage fewer). Queue waits on a busy cluster are "
        f"not counted: they are the cluster's, not the profile's.",
        "",
        "Status-check schedule of plugin 2.8.0 (seconds after a job finished and reset it; "
        "`slurm-init-seconds-before-status-checks` = start interval): "
        + "; ".join(f"{init}: " + ", ".join(f"{t:.0f}" for t in poll_times(init, 300)) for init in (1, 5, 10, 20, 40))
        + ".",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--init", type=int, nargs="*", default=[],
                        help="also run with these slurm-init-seconds-before-status-checks")
    parser.add_argument("--no-fold-groups", action="store_true", help="skip the per-fold train → infer groups")
    parser.add_argument("--repeat", type=int, default=1, help="run the local and the plain SLURM study this often")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders")
    args = parser.parse_args()

    init_default = yaml.safe_load((CI_PROFILE / "config.yaml").read_text())["slurm-init-seconds-before-status-checks"]
    variants: list[tuple[str, list[str]]] = []
    for _ in range(args.repeat):
        variants += [("local", []), ("slurm", ["--profile", str(PROFILE), "--workflow-profile", str(CI_PROFILE)])]
    if not args.no_fold_groups:
        variants.append(("slurm, per-fold train → infer groups",
                         ["--profile", str(PROFILE), "--workflow-profile", str(CI_PROFILE), *fold_group_args()]))
    for init in args.init:
        variants.append((f"slurm, status checks from {init} s", ["--profile", str(PROFILE), "--workflow-profile",
                                                                  str(CI_PROFILE),
                                                                  "--slurm-init-seconds-before-status-checks", str(init)]))

    scratch = Path(tempfile.mkdtemp(prefix="glioseg-slurm-overhead-"))
    started_cluster = start_cluster()
    runs, loads = [], []
    try:
        local_dir = None
        for index, (name, extra) in enumerate(variants):
            workdir = scratch / f"{index}"
            workdir.mkdir()
            (workdir / "study.yaml").write_text(yaml.safe_dump(study_config(args.epochs, args.folds)))
            loads.append(f"{os.getloadavg()[0]:.1f}")
            seconds, output = snakemake(workdir, *(extra or ["--cores", "2"]))
            print(f"{name}: {seconds:.0f} s", flush=True)
            if not extra:
                local_dir = workdir
                runs.append(Run(name, seconds, output, []))
                continue
            jobs = parse_jobs(output)
            for job in jobs:
                slurm_details(job)
            runs.append(Run(name, seconds, output, jobs, same_outputs(workdir, local_dir, args.folds)))
    finally:
        if started_cluster:
            subprocess.run(["bash", str(ROOT / "ci/slurm/stop.sh"), "--quiet"], capture_output=True, timeout=120)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    # Repeats: the first local run is the reference for every ratio; the others are listed as they ran.
    text = report(runs, args, init_default, loads)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
