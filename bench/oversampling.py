"""Which share of tumour-centred training patches (``oversample_foreground``) the default study should use.

Trains the default study's fold 0 (config.yaml, its 20-case sample, all its
epochs, one thread as its job has) once per share and records the best mean
validation Dice and the whole-tumour Dice, into bench/results/oversampling.md
with the machine. The config's default is the share this measurement favours.

Run: ``.venv/bin/python bench/oversampling.py [--shares 0 0.33 0.66]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
from pathlib import Path

from data_path import cpu_model, prepare_default_study, train_default_fold

OUT = Path(__file__).resolve().parent / "results" / "oversampling.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.33, 0.66])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="glioseg-oversampling-"))
    try:
        config = prepare_default_study(work)
        histories = {share: train_default_fold(work, config, f"share{share}", oversample_foreground=share) for share in args.shares}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "# Tumour-centred patches in the default study",
        "",
        f"Machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores. Fold 0 of config.yaml's experiment "
        f"({config['experiments']['unet3d']['epochs']} epochs), one run per share. Produced by `bench/oversampling.py`.",
        "",
        "| oversample_foreground | best mean val Dice | its epoch | val Dice WT there | val Dice ET there | training s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for share, history in histories.items():
        best = history.loc[history["val_dice_mean"].idxmax()]
        lines.append(f"| {share:.2f} | {best['val_dice_mean']:.3f} | {int(best['epoch'])} | {best['val_dice_WT']:.3f} | "
                     f"{best['val_dice_ET']:.3f} | {history['seconds'].sum():.0f} |")
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
