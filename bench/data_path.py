"""The data path at study scale, measured where training really reads: the cache reader, the loader, the CLI stages.

On BraTS-size synthetic cases (240×240×155, 4 modalities and a label, as
gzipped NIfTI in the BraTS 2021 layout), all ratios measured in one run:

1. cache MB per case next to the raw .nii.gz files of the same cases;
2. a whole case and one 128³ training patch read through the cache
   (:class:`glioseg.cache.CaseReader`, :class:`glioseg.training.data.ReadPatchd`)
   next to decoding the case's raw files (glioseg.nifti, as preprocessing reads);
3. training samples per second the loader delivers (128³ patches, the default
   augmentation) with 0, 1 and 2 workers, next to one training step of the
   default U-Net, SegResNet and Swin UNETR (feature size 48) at 128³;
4. ``glioseg manifest`` + ``glioseg preprocess`` wall time with 1 and 2
   threads, and whether their outputs are the same bytes;
5. the data-wait share of the default study's training (config.yaml's
   experiment on its 20-case sample, fold 0, through ``glioseg train`` with
   the job's one thread), from the history.csv it writes.

Writes bench/results/data_path.md with the machine.
Run: ``.venv/bin/python bench/data_path.py [--cases 24] [--epochs 8] [--skip-models]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from machine import cpu_model

from glioseg.cli import main as glioseg
from glioseg.config import training_settings, validate_config
from glioseg.datasets.synthetic import SyntheticSpec, case_id, synthesize_case, write_sample_archive
from glioseg.losses import build_loss
from glioseg.manifest import image_column, read_dataset_info, read_manifest
from glioseg.models import build_model, training_loss
from glioseg.nifti import read_image, read_label
from glioseg.parallel import map_cases
from glioseg.settings import Augmentation
from glioseg.training.data import ReadPatchd, case_items, loader_options, train_loader, train_transforms

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "data_path.md"
PATCH = (128, 128, 128)
AUGMENT = Augmentation(flip_prob=0.5, scale_intensity=0.1, shift_intensity=0.1)
MODELS = {
    "unet (default study)": {"name": "unet", "params": {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 0}},
    "segresnet": {"name": "segresnet", "params": {}},
    "swin_unetr feature_size 48": {"name": "swin_unetr", "params": {"feature_size": 48, "use_checkpoint": True}},
}




def median_ms(read, repeats: int = 5) -> float:
    read()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        read()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


BRATS_SHAPE = (240, 240, 155)


def write_case(index: int, raw: Path, shape: tuple[int, int, int] = BRATS_SHAPE, seed: int = 11) -> None:
    """One synthetic case (BraTS size by default) in the BraTS 2021 layout (module level: runs in worker processes)."""
    import nibabel as nib

    spacing = tuple(b / s for b, s in zip(BRATS_SHAPE, shape))  # the same head, at another resolution
    case = synthesize_case(SyntheticSpec(cases=index + 1, shape=shape, spacing=spacing, seed=seed), index)
    folder = raw / case_id(index)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in {**case.images, "seg": case.seg}.items():
        nib.save(nib.Nifti1Image(data, case.affine), folder / f"{case_id(index)}_{name}.nii.gz")


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def run_stages(raw: Path, out: Path, threads: int) -> dict[str, float]:
    """``glioseg manifest`` then ``glioseg preprocess`` through the CLI, as the rules run them."""
    out.mkdir(parents=True)
    started = time.perf_counter()
    assert glioseg(["--threads", str(threads), "manifest", "--raw", str(raw), "--layout", "brats2021", "--dataset", "big",
                    "--out-csv", str(out / "big.csv"), "--out-json", str(out / "big.json")]) == 0
    manifest = time.perf_counter() - started
    started = time.perf_counter()
    assert glioseg(["--threads", str(threads), "preprocess", "--manifest", str(out / "big.csv"), "--info", str(out / "big.json"),
                    "--margin", "0", "--background", "zero", "--out", str(out / "cache")]) == 0
    return {"manifest": manifest, "preprocess": time.perf_counter() - started}


def same_outputs(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files)


def read_times(out: Path) -> dict[str, float]:
    manifest, info = read_manifest(out / "big.csv"), read_dataset_info(out / "big.json")
    rows = [row for _, row in manifest.iterrows()][:6]
    items = case_items(out / "cache", [row["case"] for row in rows])
    patch = ReadPatchd(PATCH, oversample_foreground=0.33)
    sample = train_transforms(PATCH, AUGMENT, 0.33)

    def raw(row) -> None:
        [read_image(row[image_column(m)]) for m in info.modalities]
        read_label(row["label"])

    def whole(item) -> None:
        item["reader"].image()
        item["reader"].labels()

    return {
        "raw": statistics.mean(median_ms(lambda r=row: raw(r), 3) for row in rows),
        "whole": statistics.mean(median_ms(lambda i=item: whole(i)) for item in items),
        "patch": statistics.mean(median_ms(lambda i=item: patch(i), 9) for item in items),
        "sample": statistics.mean(median_ms(lambda i=item: sample(i), 5) for item in items),
    }


def loader_rate(cache: Path, cases: list[str], workers: int, samples: int) -> float:
    """Samples per second out of the training loader (128³ patches, default augmentation), after its first batch."""
    items = (case_items(cache, cases) * (samples // len(cases) + 1))[:samples]
    loader = train_loader(items, train_transforms(PATCH, AUGMENT, 0.33), batch_size=1, seed=0, epoch=1,
                          options=loader_options(workers, torch.device("cpu")))
    batches = iter(loader)
    next(batches)
    started = time.perf_counter()
    count = sum(1 for _ in batches)
    return count / (time.perf_counter() - started)


def step_seconds(spec: dict) -> float:
    """One training step (forward, loss, backward, AdamW) on one 128³ patch; the second of two, the first warms up."""
    torch.manual_seed(0)
    model = build_model(spec, 4, 3, spatial_dims=3, patch_size=PATCH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = build_loss({"name": "dice_bce"})
    image, target = torch.randn(1, 4, *PATCH), (torch.rand(1, 3, *PATCH) > 0.9).float()
    times = []
    for _ in range(2):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        training_loss(model, model(image), target, loss_fn).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return times[-1]


def prepare_default_study(work: Path) -> dict:
    """The default study's sample, manifest, folds and cache under ``work``, made by the CLI; returns the validated config."""
    config = validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()), ROOT / "workflow" / "schemas" / "config.schema.yaml")
    dataset = config["datasets"]["sample"]
    archive = work / "sample.zip"
    write_sample_archive(SyntheticSpec(**dataset["source"]["synthetic"]), archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(work / "sample")
    for args in (["manifest", "--raw", str(work / "sample"), "--layout", "brats2021", "--dataset", "sample",
                  "--out-csv", str(work / "sample.csv"), "--out-json", str(work / "sample.json")],
                 ["split", "--manifest", str(work / "sample.csv"), "--info", str(work / "sample.json"), "--folds", "5",
                  "--seed", "0", "--out-json", str(work / "folds.json"), "--out-csv", str(work / "splits.csv")],
                 ["preprocess", "--manifest", str(work / "sample.csv"), "--info", str(work / "sample.json"), "--margin", "0",
                  "--background", "zero", "--out", str(work / "sample_cache")]):
        assert glioseg(args) == 0
    return config


def train_default_fold(work: Path, config: dict, name: str, **changes) -> pd.DataFrame:
    """Fold 0 of the default study's experiment through ``glioseg --threads 1 train`` (its job's CPUs), with ``changes``."""
    settings = {**training_settings(config, "unet3d"), **changes}
    run = work / name
    assert glioseg(["--threads", "1", "train", "--cache", str(work / "sample_cache"), "--splits", str(work / "folds.json"),
                    "--fold", "0", "--settings", json.dumps(settings), "--out-model", str(run / "model.pt"),
                    "--out-history", str(run / "history.csv"), "--state", str(run / "state")]) == 0
    return pd.read_csv(run / "history.csv")


def default_study_wait(work: Path, epochs: int) -> dict[str, float]:
    """Where the default study's training time goes, from the history.csv of ``epochs`` epochs of its fold 0."""
    history = train_default_fold(work, prepare_default_study(work), "wait", epochs=epochs)
    data, compute = history["data_seconds"].sum(), history["compute_seconds"].sum()
    return {"data": data, "compute": compute, "validation": history["validation_seconds"].sum(),
            "epoch": history["seconds"].sum(), "share": data / (data + compute)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the default study's fold 0 to time")
    parser.add_argument("--skip-models", action="store_true", help="leave out the 128³ model steps (Swin UNETR takes minutes on a CPU)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="glioseg-data-path-"))
    try:
        raw = work / "raw"
        map_cases(partial(write_case, raw=raw), list(range(args.cases)), threads=os.cpu_count() or 1, desc="synthesising",
                  name=case_id)
        stages = {threads: run_stages(raw, work / f"threads{threads}", threads) for threads in (1, 2)}
        identical = same_outputs(work / "threads1", work / "threads2")
        cache = work / "threads1" / "cache"
        raw_mb, cache_mb = folder_mb(raw) / args.cases, folder_mb(cache) / args.cases
        reads = read_times(work / "threads1")
        cases = list(read_manifest(work / "threads1" / "big.csv")["case"])
        torch.set_num_threads(1)
        rates = {workers: loader_rate(cache, cases, workers, samples=24) for workers in (0, 1, 2)}
        torch.set_num_threads(os.cpu_count() or 1)
        steps = {} if args.skip_models else {name: step_seconds(spec) for name, spec in MODELS.items()}
        study = default_study_wait(work / "study", args.epochs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(args, stages, identical, raw_mb, cache_mb, reads, rates, steps, study, (load_before, os.getloadavg()[0]))


def write_report(args, stages, identical, raw_mb, cache_mb, reads, rates, steps, study, load) -> None:
    one, two = stages[1], stages[2]
    serial, parallel = one["manifest"] + one["preprocess"], two["manifest"] + two["preprocess"]
    lines = [
        "# The data path at study scale",
        "",
        f"Machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}, numpy {np.__version__}. "
        f"{args.cases} synthetic BraTS-size cases (240×240×155, 4 modalities + label, gzipped NIfTI int16). Produced by "
        f"`bench/data_path.py`; every ratio is between numbers measured in the same run. Load average (1 min) {load[0]:.1f} "
        f"before, {load[1]:.1f} after: other work on the machine slows both sides of a ratio, but thread scaling most.",
        "",
        "| what | measured | target | met |",
        "|---|---|---|---|",
        f"| cache on disk per case vs raw .nii.gz | {cache_mb:.1f} MB vs {raw_mb:.1f} MB = {cache_mb / raw_mb:.2f}× | ≤ 1.5× | "
        f"{'yes' if cache_mb / raw_mb <= 1.5 else 'no'} |",
        f"| whole case (image z-scored + labels) vs decoding the raw files | {reads['whole']:.0f} ms vs {reads['raw']:.0f} ms = "
        f"{reads['raw'] / reads['whole']:.1f}× faster | ≥ 10× | {'yes' if reads['raw'] / reads['whole'] >= 10 else 'no'} |",
        f"| one 128³ training patch (ReadPatchd) vs decoding the raw files | {reads['patch']:.1f} ms vs {reads['raw']:.0f} ms = "
        f"{reads['raw'] / reads['patch']:.1f}× faster | ≥ 30× | {'yes' if reads['raw'] / reads['patch'] >= 30 else 'no'} |",
        f"| one 128³ training sample (patch read + pad + flips + intensity), for scale | {reads['sample']:.0f} ms | – | – |",
        f"| manifest + preprocess, 2 threads vs 1 | {parallel:.1f} s vs {serial:.1f} s = {serial / parallel:.2f}× faster; "
        f"outputs {'byte-identical' if identical else 'DIFFERENT'} | ≥ 1.7×, same bytes | "
        f"{'yes' if serial / parallel >= 1.7 and identical else 'no'} |",
        f"| default study, fold 0, {args.epochs} epochs, 1 thread: data wait share of the training steps | "
        f"{100 * study['share']:.1f} % ({study['data']:.1f} s of {study['data'] + study['compute']:.1f} s) | ≤ 5 % | "
        f"{'yes' if study['share'] <= 0.05 else 'no'} |",
        "",
        f"Stages: manifest {one['manifest']:.1f} s / {two['manifest']:.1f} s, preprocess {one['preprocess']:.1f} s / "
        f"{two['preprocess']:.1f} s (1 / 2 threads). Default study: validation {study['validation']:.1f} s of "
        f"{study['epoch']:.1f} s of epochs ({100 * study['validation'] / study['epoch']:.0f} %).",
        "",
        "## Loader throughput next to the model step (128³, batch 1, one intra-op thread for the loader's own process)",
        "",
        "| loader workers | samples/s |",
        "|---|---:|",
        *[f"| {workers} | {rate:.2f} |" for workers, rate in rates.items()],
        "",
    ]
    if steps:
        lines += ["| model at 128³ | training step (s) | samples/s it consumes | loader with 0 workers keeps up |", "|---|---:|---:|---|"]
        lines += [f"| {name} | {seconds:.2f} | {1 / seconds:.2f} | {'yes' if rates[0] >= 1 / seconds else 'no'} |"
                  for name, seconds in steps.items()]
    lines += ["", "Why targets are missed, and what was chosen instead: docs/decisions.md, \"Cache format\"."]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
