"""Time the default study end to end and record its scores against the issue's targets.

Runs ``snakemake --cores 2`` on config.yaml in a scratch working directory
(so the repository's own results/ are untouched), then writes wall and CPU
time, the ratio to the 10-minute budget and the fold-level Dice to
bench/results/default_study.md, with the machine it ran on.

Run: ``.venv/bin/python bench/default_study.py``
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "default_study.md"
BUDGET_S = 600
WT_TARGET = 0.85




def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="glioseg-default-study-"))
    shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
                    "--cores", "2", "--quiet"], check=True, env=env)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    scores = pd.read_csv(workdir / "results" / "summary" / "scores.csv")
    folds = scores.groupby(["region", "fold"])["dice"].mean().groupby("region").agg(["mean", "std"])
    lines = [
        "# Default study (config.yaml) end to end",
        "",
        f"Machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, no GPU used; "
        f"`snakemake --cores 2` after set-up; {time.strftime('%Y-%m-%d')}.",
        "",
        "| measure | value | target | ratio to target |",
        "|---|---|---|---|",
        f"| wall time | {wall:.0f} s | ≤ {BUDGET_S} s | {wall / BUDGET_S:.2f} |",
        f"| CPU time (all jobs) | {usage.ru_utime + usage.ru_stime:.0f} s | | |",
        f"| peak RSS of one job | {usage.ru_maxrss / 1024:.0f} MB | | |",
        f"| WT Dice, mean over folds | {folds.loc['WT', 'mean']:.3f} | ≥ {WT_TARGET} | {folds.loc['WT', 'mean'] / WT_TARGET:.2f} |",
        "",
        "Validation Dice per region, mean ± std over the 5 fold means:",
        "",
        "| region | Dice |",
        "|---|---|",
        *[f"| {region} | {folds.loc[region, 'mean']:.3f} ± {folds.loc[region, 'std']:.3f} |" for region in ("TC", "WT", "ET")],
    ]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
