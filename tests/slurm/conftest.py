"""A one-node SLURM cluster for the tests in this folder, and Snakemake runs against it.

The cluster is started once per session by ci/slurm/start.sh (which installs
Debian's slurm and munge packages if they are missing) and stopped by
ci/slurm/stop.sh at the end. The tests are skipped, with the reason, where that
cannot work: not root, or no SLURM and no way to install it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def start_niced(command: list[str], workdir: Path, **popen: Any) -> subprocess.Popen:
    """Start a local run beside a cluster run at nice 19, so that it takes only the CPU the SLURM jobs leave."""
    return subprocess.Popen(["nice", "-n", "19", *command], cwd=workdir, env=environment(), text=True, **popen)


def unnice(process: subprocess.Popen) -> None:
    """Normal priority for a :func:`start_niced` run, its threads and its children, once the cluster run is
    over: at nice 19 on a loaded machine it got next to no CPU, and the test timed out waiting for it."""
    for pid in _process_tree(process.pid):
        for task in _tasks(pid):
            with contextlib.suppress(ProcessLookupError):  # it has just ended
                os.setpriority(os.PRIO_PROCESS, task, 0)  # Linux: one thread's


def _process_tree(pid: int) -> Iterator[int]:
    yield pid
    for task in _tasks(pid):
        with contextlib.suppress(FileNotFoundError):  # it has just ended
            for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                yield from _process_tree(int(child))


def _tasks(pid: int) -> list[int]:
    """The process's threads; none once it has ended."""
    with contextlib.suppress(FileNotFoundError):
        return [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    return []


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
