"""How much one training step and one sliding-window inference cost for each model of the registry.

Builds every registered 3D model as the study configs use it (Swin UNETR at
feature sizes 12 and 48, the MedicalNet ResNet U-Nets, SegResNet with and
without its VAE branch, DynUNet, the default study's U-Net) and the 2D models
of studies 3 and 4, then times a training step (forward, loss through the
model's own training hook, backward, AdamW step) on a batch of one patch (3D)
or of slices (2D) and a whole-volume prediction (slice by slice in 2D). On a CUDA device it also records the peak GPU
memory of the step. Step times are reported as ratios to the default study's
U-Net, measured in the same run, with the machine recorded, in
bench/results/model_steps.md.

Run: ``.venv/bin/python bench/model_steps.py [--patch 64] [--volume 96 96 64] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from machine import cpu_model

from glioseg.inference import predict_probabilities
from glioseg.losses import build_loss
from glioseg.models import build_model, on_epoch_start, training_loss
from glioseg.settings import InferenceSettings

OUT = Path(__file__).parent / "results" / "model_steps.md"

MODELS: dict[str, dict] = {
    "unet (default study)": {"name": "unet", "params": {"channels": [8, 16, 32, 64], "strides": [2, 2, 2],
                                                        "num_res_units": 0}},
    "segresnet": {"name": "segresnet", "params": {}},
    "segresnet_vae": {"name": "segresnet_vae", "params": {}},
    "dynunet": {"name": "dynunet", "params": {}},
    "resnet_unet depth 10": {"name": "resnet_unet", "params": {"depth": 10}},
    "resnet_unet depth 18": {"name": "resnet_unet", "params": {"depth": 18}},
    "resnet_unet depth 50": {"name": "resnet_unet", "params": {"depth": 50}},
    "resnet_unet depth 10, frozen encoder": {"name": "resnet_unet", "params": {"depth": 10, "freeze_encoder": "frozen"}},
    "swin_unetr feature_size 12": {"name": "swin_unetr", "params": {"feature_size": 12}},
    "swin_unetr feature_size 48 (study 1)": {"name": "swin_unetr", "params": {"feature_size": 48, "use_checkpoint": True}},
}

MODELS_2D: dict[str, dict] = {
    "basic_unet, Buda et al. (study 4)": {"name": "basic_unet", "params": {"features": [32, 64, 128, 256, 512, 32]}},
    "unet 2D": {"name": "unet", "params": {"channels": [32, 64, 128, 256, 512], "num_res_units": 0}},
    "attention_unet": {"name": "attention_unet", "params": {}},
    "unet3plus, no bridge (study 3)": {"name": "unet3plus", "params": {"bridge": False}},
    "resunetpp": {"name": "resunetpp", "params": {}},
}




def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(spec: dict, size: list[int], batch: int, volume: tuple[int, int, int], repeats: int,
              device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(spec, 4, 3, spatial_dims=len(size), patch_size=size).to(device)
    on_epoch_start(model, 1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = build_loss({"name": "dice_bce"})
    image = torch.randn(batch, 4, *size, device=device)
    target = (torch.rand(batch, 3, *size, device=device) > 0.9).float()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = training_loss(model, model(image), target, loss_fn)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocations, cuDNN autotuning
    times = []
    for _ in range(repeats):
        synchronise(device)
        started = time.perf_counter()
        step()
        synchronise(device)
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    window = InferenceSettings(roi_size=tuple(size), sw_batch_size=2 if len(size) == 3 else 16, overlap=0.5, blend="gaussian",
                               threshold=0.5, amp=device.type == "cuda")
    case = torch.randn(1, 4, *volume)
    synchronise(device)
    started = time.perf_counter()
    predict_probabilities(model, case, window, device)
    synchronise(device)
    inference = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    return {"step": statistics.median(times), "inference": inference, "peak_gib": peak, "params_m": parameters}


def _row(label: str, row: dict[str, float], base: float) -> str:
    peak = "n/a (CPU)" if row["peak_gib"] != row["peak_gib"] else f"{row['peak_gib']:.2f}"
    return (f"| {label} | {row['params_m']:.1f} | {row['step']:.3f} | {row['step'] / base:.1f} | "
            f"{row['inference']:.2f} | {peak} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=64, help="cubic training patch side (multiple of 32 for Swin UNETR)")
    parser.add_argument("--volume", type=int, nargs=3, default=[96, 96, 64], help="volume for the sliding-window timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slice", type=int, default=256, help="2D models: square slice side")
    parser.add_argument("--slice-batch", type=int, default=8, help="2D models: slices per step")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    rows, rows_2d = {}, {}
    for label, spec in MODELS.items():
        rows[label] = time_step(spec, [args.patch] * 3, 1, tuple(args.volume), args.repeats, device)
        print(f"{label}: {rows[label]}", flush=True)
    for label, spec in MODELS_2D.items():
        rows_2d[label] = time_step(spec, [args.slice] * 2, args.slice_batch, tuple(args.volume), args.repeats, device)
        print(f"{label}: {rows_2d[label]}", flush=True)
    base = rows["unet (default study)"]["step"]
    lines = [
        "# Training step and inference cost per model",
        "",
        f"Machine: {device_name(device)}; torch {torch.__version__}; device `{device.type}`.",
        f"One training step = forward + loss + backward + AdamW step on one {args.patch}³ patch of 4 channels "
        f"(median of {args.repeats} after a warm-up); inference = one {'×'.join(map(str, args.volume))} volume, "
        "sliding window at the patch size, overlap 0.5, Gaussian blending. Produced by `bench/model_steps.py`.",
        "",
        "| model | parameters (M) | step (s) | step ÷ default U-Net | inference (s) | peak GPU memory (GiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [_row(label, row, base) for label, row in rows.items()]
    lines += [
        "",
        f"2D models: one step on {args.slice_batch} slices of {args.slice}×{args.slice} (4 channels); inference = the same "
        f"{'×'.join(map(str, args.volume))} volume predicted slice by slice (each slice padded to the window).",
        "",
        "| model | parameters (M) | step (s) | step ÷ default U-Net | inference (s) | peak GPU memory (GiB) |",
        "|---|---:|---:|---:|---:|---:|",
        *(_row(label, row, base) for label, row in rows_2d.items()),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
