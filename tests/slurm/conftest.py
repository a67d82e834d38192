"""A one-node SLURM cluster for the tests in this folder, and Snakemake runs against it.

The cluster is started once per session by ci/slurm/start.sh (which installs
Debian's slurm and munge packages if they are missing) and stopped by
ci/slurm/stop.sh at the end. The tests are skipped, with the reason, where that
cannot work: not root, or no SLURM and no way to install it.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "ci" / "slurm" / "start.sh"
STOP = ROOT / "ci" / "slurm" / "stop.sh"
PROFILE = ROOT / "profiles" / "slurm"
CI_PROFILE = ROOT / "profiles" / "slurm-ci"

SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float

    def submitted(self) -> list[tuple[str, Path]]:
        """(SLURM job id, its log file) for every sbatch submission, in order."""
        return [(jobid, Path(log)) for jobid, log in SUBMITTED.findall(self.output)]


def environment() -> dict[str, str]:
    """The test interpreter's bin first on PATH: sbatch exports it, so jobs find snakemake and glioseg."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")


def snakemake_command(workdir: Path, configfile: Path, *args: str, profile: bool = True) -> list[str]:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    if profile:
        command += ["--profile", str(PROFILE), "--workflow-profile", str(CI_PROFILE)]
    else:
        command += ["--cores", "2"]
    return [*command, *args, "--configfile", str(configfile)]


def run_snakemake(workdir: Path, configfile: Path, *args: str, profile: bool = True, timeout: int = 420) -> Run:
    """Snakemake under `timeout -k`: with the SLURM executor it has been seen to ignore SIGTERM."""
    import time

    started = time.monotonic()
    command = ["timeout", "-k", "10", str(timeout), *snakemake_command(workdir, configfile, *args, profile=profile)]
    done = subprocess.run(command, cwd=workdir, env=environment(), capture_output=True, text=True, timeout=timeout + 30)
    return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - started)


@dataclass(frozen=True)
class SlurmJob:
    """A job as squeue saw it: its state and what it reserved."""

    state: str
    cpus: int
    memory: int  # MB
    minutes: int  # the time limit


def slurm_job(jobid: str) -> SlurmJob:
    """A finished job's state and reservation (squeue keeps finished jobs for MinJobAge=300 s)."""
    done = subprocess.run(["squeue", "-h", "-t", "all", "-j", jobid, "-o", "%T|%C|%m|%l"], capture_output=True, text=True)
    state, cpus, memory, limit = done.stdout.strip().split("|")
    days, _, clock = limit.rpartition("-")
    hours, minutes, _ = ([0, 0] + [int(part) for part in clock.split(":")])[-3:]
    assert memory.endswith("M"), memory
    return SlurmJob(state, int(cpus), int(memory[:-1]), 24 * 60 * int(days or 0) + 60 * hours + minutes)


STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")


def group_member_times(log: str) -> list[tuple[str, float, float]]:
    """(rule, start, end) of each member of a group job, in the order its Snakemake started them.

    The group's Snakemake prints "rule X:" when it starts a member and "Finished jobid: N
    (Rule: X)" when it is done; the member's own Snakemake (in its job step) prints
    "localrule X:" and a "Finished" line of its own just before. A member's end is the last
    "Finished" line before the next member starts; one that never got one (members started
    side by side) ends at infinity.
    """
    members: list[list] = []
    now = 0.0
    for line in log.splitlines():
        if found := STAMP.match(line):
            now = datetime.strptime(found.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
        elif found := re.match(r"^rule (\w+):", line):
            members.append([found.group(1), now, math.inf])
        elif members and re.match(r"^Finished jobid: \d+ \(Rule: \w+\)", line):
            members[-1][2] = now
    return [tuple(member) for member in members]


def slurm_state(jobid: str) -> str:
    """A finished job's state (FAILED, TIMEOUT, COMPLETED…): the cluster keeps finished jobs for MinJobAge=300 s."""
    done = subprocess.run(["squeue", "-h", "-t", "all", "-j", jobid, "-o", "%T"], capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """The running cluster (its `sinfo`), for the whole session."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM tests start a SLURM cluster on this machine: run them as root")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    # start.sh gives the node `nproc` CPUs, and nproc obeys OMP_NUM_THREADS: with it set to 1 (a
    # common way to run the tests on a small machine) the node had 1 CPU and sbatch refused the
    # profile's 2-CPU group jobs ("More processors requested than permitted").
    machine = {name: value for name, value in os.environ.items() if name not in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT")}
    started = subprocess.run(["bash", str(START)], env=machine, capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        if "could not install" in started.stderr:
            pytest.skip(f"apt-get could not install SLURM: {started.stderr.strip()[-500:]}")
        pytest.fail(f"ci/slurm/start.sh failed:\n{started.stdout}\n{started.stderr}")
    try:
        yield started.stdout
    finally:
        subprocess.run(["bash", str(STOP), "--quiet"], capture_output=True, text=True, timeout=120)
