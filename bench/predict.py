"""What `glioseg predict` costs per case for the default study's model, and how much of a run is start-up.

Builds, under bench/work/predict/, the default study's results tree for a
small synthetic sample of the default shape (96 × 96 × 64 at 2 mm): cache,
5-fold split, and five fold models of the default network (config.yaml's
unet3d, 8–64 channels) with their initial weights — prediction time does not
depend on the weights' values, only on the network and the volume, so the
40-epoch trainings are skipped — plus the experiment's record and a bundle.
Then, each as its own `glioseg predict` process, as a user runs it:

- one fold, the 5-fold ensemble, and one fold with flip TTA (8 mirrorings),
  each on 1 case and on N cases: the per-case cost is the slope
  ((T_N − T_1) / (N − 1)), the process's fixed cost (start-up: Python, torch
  and MONAI imports, model loading) what is left of T_1;
- the fixed cost itself, split into importing the modules and loading the
  bundle and building the networks, timed inside one process;
- one case's stages inside one process: reading the NIfTI files, cropping and
  z-scoring, the network, writing the label map.

Writes bench/results/predict.md with the machine. Run:
``.venv/bin/python bench/predict.py [--cases 6] [--threads 2]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "predict"
OUT = ROOT / "bench" / "results" / "predict.md"
GLIOSEG = [sys.executable, "-m", "glioseg"]




def build(cases: int) -> tuple[Path, Path, Path]:
    """The default study's results tree (untrained weights), its bundle, and the raw cases; built once."""
    import torch

    from glioseg.acquire.extract import extract_archive
    from glioseg.atomic import write_json
    from glioseg.bundle import from_results, write_bundle
    from glioseg.config import experiment_record, training_settings, validate_config
    from glioseg.datasets.synthetic import SyntheticSpec, write_sample_archive
    from glioseg.manifest import build_manifest
    from glioseg.models.model_file import network_for, save_model
    from glioseg.paths import Results
    from glioseg.preprocess import preprocess_dataset
    from glioseg.settings import TrainingSettings
    from glioseg.splits import write_splits

    results = Results(str(WORK / "results"))
    raw, bundle = WORK / "raw", WORK / "unet3d.pt"
    if bundle.is_file():
        return Path(results.root) / "models" / "unet3d", bundle, raw
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["datasets"]["sample"]["source"]["synthetic"]["cases"] = max(cases, 5)
    config["results"] = results.root
    config = validate_config(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    spec = config["datasets"]["sample"]["source"]["synthetic"]
    write_sample_archive(SyntheticSpec(**{**spec, "shape": tuple(spec["shape"]), "spacing": tuple(spec["spacing"])}),
                         WORK / "sample.zip")
    extract_archive(WORK / "sample.zip", raw)
    manifest, info = build_manifest(raw, "brats2021", "sample")
    preprocess_dataset(manifest, info, results.preprocessed("sample"), margin=config["datasets"]["sample"]["preprocess"]["margin"])
    write_splits(manifest, info.modalities, 5, 0.0, 0, results.folds("sample"), results.split_table("sample"))
    settings = TrainingSettings.from_json(training_settings(config, "unet3d"))
    for fold in range(5):
        torch.manual_seed(fold)
        network = network_for(settings, 4, 3)
        save_model(results.model("unet3d", fold), network.state_dict(), settings, ["TC", "WT", "ET"], 4, epoch=0,
                   best_metric=float("nan"))
    write_json(results.experiment_record("unet3d"), experiment_record(config, "unet3d"))
    write_bundle(from_results(Path(results.root) / "models" / "unet3d"), bundle)
    return Path(results.root) / "models" / "unet3d", bundle, raw


def run(bundle: Path, inputs: list[Path], threads: int, *options: str) -> float:
    """Wall seconds of one `glioseg predict` process into a fresh folder."""
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([*GLIOSEG, "--threads", str(threads), "predict", "--model", str(bundle), "--input", *map(str, inputs),
                    "--output", str(out), *options], check=True, capture_output=True, cwd=ROOT,
                   env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return time.perf_counter() - started


def startup_parts(bundle: Path, threads: int) -> dict[str, float]:
    """Inside one fresh process: seconds to import, to read the bundle, and to build the 5 networks."""
    probe = (
        "import time; t0 = time.perf_counter()\n"
        "import torch, monai, nibabel\n"
        "from glioseg.predict import predict\n"
        "from glioseg.bundle import open_model\n"
        "from glioseg.inference import ensemble_probabilities\n"
        f"torch.set_num_threads({threads}); t1 = time.perf_counter()\n"
        f"bundle = open_model({str(bundle)!r}); t2 = time.perf_counter()\n"
        "bundle.models(bundle.folds, torch.device('cpu')); t3 = time.perf_counter()\n"
        "print(t1 - t0, t2 - t1, t3 - t2)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=ROOT)
    imports, read, build_ = map(float, done.stdout.split())
    return {"imports": imports, "read bundle": read, "build 5 networks": build_}


def case_stages(bundle: Path, case: Path, threads: int, repeats: int) -> dict[str, float]:
    """Median seconds of one case's stages in this process (one fold; 5 folds; one fold with TTA)."""
    import dataclasses

    import torch

    from glioseg.bundle import open_model
    from glioseg.inference import ensemble_probabilities
    from glioseg.labels import regions_to_labels
    from glioseg.nifti import write_label_map
    from glioseg.predict import Matcher, find_cases, read_case
    from glioseg.preprocess import prepare_image, uncrop

    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    model = open_model(bundle)
    found = find_cases([case], Matcher(model.modalities))[0]
    one, five = model.models([0], cpu), model.models(model.folds, cpu)
    settings = model.inference
    times: dict[str, list[float]] = {}

    def timed(name, call, *arguments):
        started = time.perf_counter()
        value = call(*arguments)
        times.setdefault(name, []).append(time.perf_counter() - started)
        return value

    tta = dataclasses.replace(settings, tta=True)
    for _ in range(repeats):
        image, reference = timed("read NIfTI files", read_case, found)
        prepared = timed("crop and z-score", prepare_image, image, model.margin, model.background)
        mean = timed("network, one fold", ensemble_probabilities, one, prepared.image, settings, cpu)
        timed("network, 5-fold ensemble", ensemble_probabilities, five, prepared.image, settings, cpu)
        timed("network, one fold with TTA", ensemble_probabilities, one, prepared.image, tta, cpu)
        labels = uncrop(regions_to_labels((mean > settings.threshold).numpy(), model.dataset.convention), prepared.box,
                        prepared.original_shape)
        timed("write label map", write_label_map, WORK / "stage.nii.gz", labels, reference)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    experiment, bundle, raw = build(args.cases)
    cases = sorted(p for p in raw.iterdir() if p.is_dir())[: args.cases]
    parts = startup_parts(bundle, args.threads)
    stages = case_stages(bundle, cases[0], args.threads, args.repeats)
    rows = []
    for label, options in (("one fold", ["--fold", "0"]), ("5-fold ensemble", []), ("one fold, flip TTA", ["--fold", "0", "--tta"])):
        single = run(bundle, cases[:1], args.threads, *options)
        many = run(bundle, cases, args.threads, *options)
        per_case = (many - single) / (len(cases) - 1)
        rows.append((label, single, many, per_case, single - per_case))
        print(rows[-1], flush=True)
    tree = run(experiment, cases, args.threads, "--fold", "0")

    import monai
    import torch

    lines = [
        "# `glioseg predict`: seconds per case, and process start-up",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (shared with other jobs while measured), no GPU; "
        f"`--threads {args.threads}`; Python {platform.python_version()}, torch {torch.__version__}, MONAI {monai.__version__}. "
        f"Run: `.venv/bin/python bench/predict.py --cases {args.cases} --threads {args.threads}`.",
        "",
        "The default study's model (config.yaml's `unet3d`: MONAI U-Net 8–64 channels, sliding window 64 × 64 × 48, "
        "overlap 0.5, 2 windows per pass) on synthetic cases of the default sample (96 × 96 × 64 voxels, 4 modalities, "
        "gzipped NIfTI), read from a bundle. The weights are the networks' initial ones: the time does not depend on "
        "their values.",
        "",
        f"## Whole `glioseg predict` processes (1 case, then {len(cases)} cases)",
        "",
        "| models | 1 case (s) | " + f"{len(cases)} cases (s) | per case (s) | fixed cost of a run (s) |",
        "|---|---|---|---|---|",
        *[f"| {label} | {single:.1f} | {many:.1f} | {per_case:.2f} | {fixed:.1f} |" for label, single, many, per_case, fixed in rows],
        "",
        f"Per case = the slope between the two runs; fixed cost = the 1-case run minus one case. The same {len(cases)} "
        f"cases from `results/models/unet3d` instead of the bundle (one fold): {tree:.1f} s.",
        "",
        "## The fixed cost, inside one process",
        "",
        "| part | seconds |",
        "|---|---|",
        *[f"| {name} | {value:.2f} |" for name, value in parts.items()],
        "",
        "## One case's stages (median of " + f"{args.repeats}, in one process)",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {value:.2f} |" for name, value in stages.items()],
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
