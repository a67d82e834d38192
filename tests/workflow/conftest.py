"""Running Snakemake on the repository's workflow from tests, in a scratch working directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).parent / "configs"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def snakemake(workdir: Path, *args: str, configfile: Path | None = None, timeout: int = 600) -> Result:
    """Run the repository's Snakefile in ``workdir`` with the test interpreter's environment."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
               "--cores", "2"]
    if configfile is not None:
        command += ["--configfile", str(configfile)]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, env=env)
    return Result(done.returncode, done.stdout, done.stderr)


def planned_jobs(result: Result) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}; empty when there is nothing to do."""
    assert result.returncode == 0, result.output
    table = re.search(r"Job stats:\n(.*?)\ntotal\s+\d+", result.output, re.S)
    if table is None:
        assert "Nothing to be done" in result.output, result.output
        return {}
    rows = [line.split() for line in table.group(1).splitlines()[2:]]
    return {rule: int(count) for rule, count in rows}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
