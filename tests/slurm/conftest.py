"""A one-node SLURM cluster for the tests in this folder, and Snakemake runs against it.

The cluster is started once per session by ci/slurm/start.sh (which installs
Debian's slurm and munge packages if they are missing) and stopped by
ci/slurm/stop.sh at the end. The tests are skipped, with the reason, where that
cannot work: not root, or no SLURM and no way to install it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
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
    started = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        if "could not install" in started.stderr:
            pytest.skip(f"apt-get could not install SLURM: {started.stderr.strip()[-500:]}")
        pytest.fail(f"ci/slurm/start.sh failed:\n{started.stdout}\n{started.stderr}")
    try:
        yield started.stdout
    finally:
        subprocess.run(["bash", str(STOP), "--quiet"], capture_output=True, text=True, timeout=120)
