"""The data path on a CUDA machine: does the GPU wait for data? (issue 12; ready to run whenever a GPU is lent).

On synthetic BraTS-size cases made on the spot (no downloads), through the
real stages (``glioseg manifest``, ``glioseg preprocess`` with every CPU, then
``train_fold`` with the config's defaults: ``num_workers: auto``, pinned
memory, non-blocking copies), it trains Swin UNETR (feature size 48, AMP) and
SegResNet at 128³ for a few epochs each and reads from their history.csv the
step time and the share of it spent waiting for data; it records the peak GPU
memory, and times sliding-window inference of one whole BraTS-size case.
About 5–8 minutes on an H100/H200 with 16 CPUs.

Writes bench/results/gpu_check.md (and a copy under $OUT when that is set, for
the device tool to bring back).
Run: ``.venv/bin/python bench/gpu_check.py [--cases 16] [--epochs 3]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from data_path import BRATS_SHAPE, cpu_model, run_stages, write_case

from glioseg.cache import read_cache_properties, readers
from glioseg.config import training_settings, validate_config
from glioseg.datasets.synthetic import case_id
from glioseg.inference import predict_probabilities
from glioseg.models.model_file import load_model
from glioseg.parallel import map_cases
from glioseg.settings import InferenceSettings, TrainingSettings
from glioseg.training.loop import FoldPaths, train_fold

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "gpu_check.md"
MODELS = {
    "swin_unetr feature_size 48, AMP": {"name": "swin_unetr", "params": {"feature_size": 48}},
    "segresnet, AMP": {"name": "segresnet", "params": {}},
}


def settings_for(model: dict, epochs: int, patch: int) -> TrainingSettings:
    config = validate_config({
        "seed": 0,
        "datasets": {"big": {"source": {"synthetic": {}}, "layout": "brats2021"}},
        "experiments": {"e": {"dataset": "big", "model": model, "epochs": epochs, "batch_size": 2,
                              "patch_size": [patch] * 3, "validate_every": epochs, "amp": True}},
    }, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    return TrainingSettings.from_json(training_settings(config, "e"))


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_and_measure(work: Path, name: str, model: dict, cases: list[str], epochs: int, patch: int,
                      device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = work / name.split()[0]
    paths = FoldPaths(cache=work / "threads2" / "cache", model=run / "model.pt", history=run / "history.csv", state=run / "state")
    history = train_fold(settings_for(model, epochs, patch), paths, cases[2:], cases[:2], ["TC", "WT", "ET"], in_channels=4, device=device)
    steady = history.iloc[1:] if len(history) > 1 else history  # the first epoch pays cuDNN autotuning and worker start
    steps = len(cases[2:]) // 2
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    model_net, _ = load_model(paths.model, device)
    reader = readers(paths.cache, cases[:1])[0]
    image = torch.from_numpy(reader.image())[None]
    window = InferenceSettings(roi_size=(patch,) * 3, overlap=0.5, sw_batch_size=4, blend="gaussian", threshold=0.5, amp=True)
    predict_probabilities(model_net, image, window, device)
    synchronise(device)
    started = time.perf_counter()
    predict_probabilities(model_net, image, window, device)
    synchronise(device)
    return {
        "step": float(steady["compute_seconds"].sum() / (steps * len(steady))),
        "wait_share": float(steady["data_seconds"].sum() / (steady["data_seconds"] + steady["compute_seconds"]).sum()),
        "peak_gib": peak,
        "inference": time.perf_counter() - started,
        "shape": tuple(image.shape[2:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--device", default="cuda", help="cpu only to check the script itself, with small --patch and --shape")
    parser.add_argument("--shape", type=int, nargs=3, default=list(BRATS_SHAPE))
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="a subset of the models, by name")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/gpu_check.py measures a CUDA machine; this one has none (CPU numbers: bench/data_path.py)")
    cpus = os.cpu_count() or 1
    torch.set_num_threads(cpus)
    work = Path(tempfile.mkdtemp(prefix="glioseg-gpu-check-"))
    try:
        raw = work / "raw"
        map_cases(partial(write_case, raw=raw, shape=tuple(args.shape)), list(range(args.cases)), threads=cpus,
                  desc="synthesising", name=case_id)
        stage_seconds = run_stages(raw, work / "threads2", cpus)
        cases = list(read_cache_properties(work / "threads2" / "cache").cases)
        results = {name: train_and_measure(work, name, MODELS[name], cases, args.epochs, args.patch, device) for name in args.models}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "# The data path on a GPU",
        "",
        f"Machine: {torch.cuda.get_device_name() if device.type == 'cuda' else 'no GPU'}, {platform.machine()} {cpu_model()}, "
        f"{cpus} CPUs; torch {torch.__version__}, "
        f"numpy {np.__version__}. {args.cases} synthetic cases of {'×'.join(map(str, args.shape))}; "
        f"manifest {stage_seconds['manifest']:.1f} s and "
        f"preprocess {stage_seconds['preprocess']:.1f} s with {cpus} threads. Training: batch 2 of {args.patch}³ patches, the "
        f"config's loader defaults (num_workers auto), {args.epochs} epochs, the first left out. Produced by `bench/gpu_check.py`.",
        "",
        "| model | step (s) | data wait, share of the steps | peak GPU memory (GiB) | sliding-window inference of one case (s) |",
        "|---|---:|---:|---:|---:|",
        *[f"| {name} | {r['step']:.3f} | {100 * r['wait_share']:.1f} % | {r['peak_gib']:.1f} | {r['inference']:.2f} ({r['shape']}) |"
          for name, r in results.items()],
    ]
    text = "\n".join(lines) + "\n"
    if device.type == "cuda":
        OUT.write_text(text, encoding="utf-8")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
