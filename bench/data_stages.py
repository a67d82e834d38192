"""Wall time of the data stages that run case by case, with 1 and 2 worker processes.

Synthesises BraTS-size cases (240×240×155, four modalities and a label, in the
BraTS 2021 folder layout; kept under bench/work/data_stages/raw for the next
run), then times ``glioseg --threads N manifest`` and ``glioseg --threads N
fingerprint`` as the pipeline's jobs run them: each a fresh process, so a
pool's start-up is counted. Every run alternates the thread counts, and the
outputs of every run must be the same bytes. Writes a markdown table, with the
machine and its load, to bench/results/data_stages.md.

Run: ``.venv/bin/python bench/data_stages.py [--cases 24] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
from machine import cpu_model

from glioseg.datasets.synthetic import SyntheticSpec, case_id, synthesize_case
from glioseg.parallel import map_cases, start_method

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work" / "data_stages"
OUT = ROOT / "results" / "data_stages.md"
SPEC = SyntheticSpec(cases=24, shape=(240, 240, 155), spacing=(1.0, 1.0, 1.0), lgg_fraction=0.25, seed=2026)


_AUTOGROUP_FILE = Path("/proc/sys/kernel/sched_autogroup_enabled")
AUTOGROUP = (
    " Linux autogroup is on here: the kernel shares the CPUs equally between sessions, not processes, so while "
    "other sessions keep the cores busy the two workers of one job share that job's one share, and 2 threads "
    "cannot be faster than 1; the speed-up is only measurable on an otherwise idle machine."
    if _AUTOGROUP_FILE.exists() and _AUTOGROUP_FILE.read_text().strip() == "1" else ""
)




def write_case(index: int, spec: SyntheticSpec, raw: Path) -> None:
    """One case's five ``.nii.gz`` files, as the sample archive holds them (written uncompressed-then-gzipped by nibabel)."""
    import nibabel as nib

    case = synthesize_case(spec, index)
    folder = raw / case_id(index)
    folder.mkdir(parents=True, exist_ok=True)
    for name, volume in {**case.images, "seg": case.seg}.items():
        image = nib.Nifti1Image(volume, case.affine)
        image.header.set_data_dtype(volume.dtype)
        nib.save(image, folder / f"{case_id(index)}_{name}.nii.gz")


def make_cases(cases: int, threads: int) -> Path:
    raw = WORK / f"raw-{cases}"
    todo = [i for i in range(cases) if not (raw / case_id(i) / f"{case_id(i)}_seg.nii.gz").is_file()]
    if todo:
        spec = dataclasses.replace(SPEC, cases=cases)
        map_cases(partial(write_case, spec=spec, raw=raw), todo, threads=threads, desc="synthesising BraTS-size cases")
    return raw


def glioseg(*args: str) -> tuple[float, float]:
    """Wall and CPU seconds of one ``glioseg`` command, in a fresh process as a pipeline job is.

    The CPU time is the process's own: with one thread, all the work; with a
    pool, the workers' is not in it (they are the fork server's children).
    """
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "glioseg", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, process.args)
    return wall, usage.ru_utime + usage.ru_stime


def run_stages(raw: Path, out: Path, threads: int) -> dict[str, tuple[float, float]]:
    out.mkdir(parents=True, exist_ok=True)
    csv, info, npz = out / "bench.csv", out / "bench.json", out / "bench.npz"
    manifest = glioseg("--threads", str(threads), "manifest", "--raw", str(raw), "--layout", "brats2021", "--dataset", "bench",
                       "--out-csv", str(csv), "--out-json", str(info))
    fingerprint = glioseg("--threads", str(threads), "fingerprint", "--manifest", str(csv), "--info", str(info), "--out", str(npz))
    return {"manifest": manifest, "fingerprint": fingerprint}


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def one_case_memory(raw: Path) -> float:
    """Peak resident memory (GB) of a process that checks and fingerprints one case, as one worker does."""
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from glioseg.datasets.layouts import get_layout\n"
        "from glioseg.datasets.overlap import _fingerprint_case\n"
        "from glioseg.manifest import case_problems\n"
        "layout = get_layout('brats2021')\n"
        "files = layout.find_cases(Path(sys.argv[1]))[0]\n"
        "assert not case_problems(files, layout)\n"
        "_fingerprint_case((files.case, str(files.images['flair'])))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    idle = code.split("layout =")[0] + "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    baseline = subprocess.run([sys.executable, "-c", idle, str(raw)], check=True, capture_output=True, text=True).stdout
    peak = subprocess.run([sys.executable, "-c", code, str(raw)], check=True, capture_output=True, text=True).stdout
    return (int(peak) - int(baseline)) / 1024**2  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    raw = make_cases(args.cases, threads=os.cpu_count() or 1)
    for path in raw.rglob("*.nii.gz"):  # the page cache holds every file for every run alike
        path.read_bytes()
    size = sum(p.stat().st_size for p in raw.rglob("*.nii.gz")) / 1024**3
    times: dict[int, list[dict[str, tuple[float, float]]]] = {1: [], 2: []}
    reference: dict[str, bytes] | None = None
    loads = [os.getloadavg()[0]]
    for repeat in range(args.repeats):
        for threads in (1, 2) if repeat % 2 == 0 else (2, 1):
            out = WORK / f"out-{threads}-{repeat}"
            times[threads].append(run_stages(raw, out, threads))
            loads.append(os.getloadavg()[0])
            found = outputs(out)
            reference = reference or found
            assert found == reference, f"outputs with {threads} threads differ from the first run's"
            print(f"run {repeat + 1}, {threads} thread(s): "
                  + ", ".join(f"{stage} {wall:.1f} s" for stage, (wall, _) in times[threads][-1].items())
                  + f", load {loads[-1]:.2f}", flush=True)
    memory = one_case_memory(raw)

    def walls(threads: int, stage: str | None) -> list[float]:
        return [sum(w for w, _ in t.values()) if stage is None else t[stage][0] for t in times[threads]]

    rows = []
    for stage in ("manifest", "fingerprint", None):
        best1, best2 = min(walls(1, stage)), min(walls(2, stage))
        mid1, mid2 = statistics.median(walls(1, stage)), statistics.median(walls(2, stage))
        cpu = min(sum(c for _, c in t.values()) if stage is None else t[stage][1] for t in times[1])
        runs = [", ".join(f"{w:.1f}" for w in walls(n, stage)) for n in (1, 2)]
        rows.append(f"| {stage or '**both**'} | {cpu:.1f} | {best1:.1f} / {mid1:.1f} ({runs[0]}) | "
                    f"{best2:.1f} / {mid2:.1f} ({runs[1]}) | **{best1 / best2:.2f}×** / {mid1 / mid2:.2f}× |")
    shape = "×".join(map(str, SPEC.shape))
    text = "\n".join([
        "# Data stages with 1 and 2 worker processes",
        "",
        f"`bench/data_stages.py --cases {args.cases} --repeats {args.repeats}` on {time.strftime('%Y-%m-%d %H:%M')}: "
        f"{args.cases} synthetic BraTS-size cases ({shape}, four int16 modalities and a label, "
        f"{size:.2f} GB of `.nii.gz`, in the page cache), each stage run as the pipeline runs it: "
        "`glioseg --threads N manifest|fingerprint` in a fresh process (the pool's start-up "
        "included; these commands do not import torch).",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}; "
        f"workers started with `{start_method()}`. The machine was shared: 1-minute load average "
        f"{min(loads):.1f} to {max(loads):.1f} during the runs (2 would be this benchmark alone), so the "
        "fastest run of each column is the better estimate; the serial CPU time is what the work costs "
        "without contention." + AUTOGROUP,
        "",
        "Seconds, fastest / median (every run), thread counts alternating from run to run:",
        "",
        "| stage | CPU, 1 thread | wall, 1 thread | wall, 2 threads | speed-up, fastest / median |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Outputs (manifest CSV and JSON, fingerprint `.npz`) of all {2 * args.repeats} runs: byte-identical. "
        f"One worker's peak memory for one case (check + fingerprint, above an idle interpreter): {memory:.2f} GB.",
        "",
    ])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
