"""Applying a trained model to new scans: raw cases in, label maps in their own geometry out.

``glioseg predict`` finds the cases of its inputs (folders of case folders,
one case folder, a flat folder, or one case's files), checks each against the
modalities the model was trained on, preprocesses it exactly as the training
cache was (:func:`glioseg.preprocess.prepare_image`), predicts with one fold
or the mean probabilities of several (:func:`glioseg.inference.ensemble_probabilities`)
and writes ``<case>.nii.gz`` with the first modality's affine and header, in
the training dataset's label convention or a chosen one.

Models are loaded once per run; each case is written atomically, so a re-run
skips the cases already written; a case that fails is reported at the end,
with its file, and the others are still written.

Which files are a case, and which modality each is: :mod:`glioseg.predict_inputs`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.atomic import write_json
from glioseg.errors import GliosegError
from glioseg.labels import BRATS, BRATS2023, LGG, LabelConvention
from glioseg.predict_inputs import CaseInput, Matcher, find_cases, find_masks, find_slice_cases, manifest_cases, read_case

log = logging.getLogger(__name__)

CONVENTIONS: dict[str, LabelConvention] = {c.name: c for c in (BRATS, BRATS2023, LGG)}
"""The label conventions ``--labels`` may choose besides the training dataset's own."""

PROBABILITIES = "probabilities"
"""The subfolder of the output that ``--probabilities`` writes into, so that the output's top level stays submission-ready."""

RUN_RECORD = "predict.json"


@dataclass
class PredictReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _run_record(bundle: Any, folds: Sequence[int], settings: Any, convention: LabelConvention) -> dict[str, Any]:
    """What decides the outputs of a run: a re-run into the same folder must have the same, or it would mix predictions."""
    return {"experiment": bundle.experiment, "model": bundle.checksum(), "folds": list(folds),
            "inference": settings.to_json(), "labels": convention.name, "margin": bundle.margin,
            "background": bundle.background}


def _check_output(output: Path, record: Mapping[str, Any], path: Path | None = None) -> None:
    """Make ``output`` and write the run record, refusing a folder of another run's predictions; before any case is
    read, so an output that cannot be written (a file, a read-only or full disk) is named at once. A record of a run
    that wrote no prediction is replaced: there is nothing to mix with."""
    path = path or output / RUN_RECORD
    if output.exists() and not output.is_dir():
        raise GliosegError("--output is a file, not a folder", path=output,
                           hint="give --output a folder (it is made if missing) that the label maps can be written into.")
    if path.is_dir():
        raise GliosegError("the run record's path is a folder", path=path,
                           hint="give --record a file name (e.g. predict.json), or remove the folder in its place.")
    earlier = _earlier_record(path) if path.exists() and _holds_predictions(output) else None
    if earlier is not None and earlier != record:
        changed = sorted(k for k in set(earlier) | set(record) if earlier.get(k) != record.get(k))
        raise GliosegError(f"the folder holds predictions of another model or other settings ({', '.join(changed)} "
                           "differ)", path=output, hint="predict into another --output folder, or delete this one.")
    try:
        output.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, dict(record))
    except OSError as exc:
        raise GliosegError(f"cannot write the run record ({exc.strerror or exc})", path=path, hint=_WRITABLE) from None


_WRITABLE = ("give --output (and --record) places you can write to, whose folders are folders and not files, on a disk "
             "with room for the predictions.")


def _holds_predictions(output: Path) -> bool:
    return any(output.glob("*.nii.gz")) or any((output / PROBABILITIES).glob("*.nii.gz"))


def _earlier_record(path: Path) -> dict[str, Any]:
    """The run record a previous run left; one that cannot be read says nothing of what the folder's predictions are,
    so it is refused rather than overwritten."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        earlier = f"unreadable ({type(exc).__name__}: {exc.strerror if isinstance(exc, OSError) else exc})"
    if not isinstance(earlier, dict):
        shown = earlier if isinstance(earlier, str) else f"a JSON {type(earlier).__name__}, not a run record"
        raise GliosegError(f"the run record of the predictions in this folder is {shown}, so they cannot be told "
                           "from another model's", path=path, hint="predict into another --output folder, or delete "
                           "this one (or the record, if the folder's predictions are this model's).")
    return earlier


def predict(model: str | Path, inputs: Sequence[str | Path], output: str | Path, *,
            patterns: Mapping[str, str] | None = None, folds: Sequence[int] | None = None,
            overrides: Mapping[str, Any] | None = None, labels: str | None = None, probabilities: bool = False,
            device: Any = None, manifest: tuple[str | Path, str | Path] | None = None,
            record: str | Path | None = None, mask: str | None = None) -> PredictReport:
    """Predict every case of ``inputs`` into ``output``; raise one error naming every case that failed, after the rest.

    ``folds``: the fold models to use (default: all, as an ensemble);
    ``overrides``: sliding-window settings replacing the experiment's
    (``overlap``, ``sw_batch_size``, ``tta``, …); ``labels``: a label
    convention name for the written maps (default: the training dataset's);
    ``manifest``: a dataset's (manifest CSV, sidecar JSON), whose cases are
    predicted besides those of ``inputs``; ``record``: where the run record
    goes (default ``output/predict.json``; elsewhere, ``output`` holds only
    ``<case>.nii.gz``, as a challenge's submission folder must); ``mask``: each
    case's brain-mask file, a pattern as ``patterns``' (required by, and only
    taken by, a model trained with brain masks). A model trained on an LGG
    kaggle_3m dataset reads case folders of tif slices and also writes each
    slice's mask, ``<case>/<case>_<n>_mask.tif``.
    """
    import torch
    from tqdm import tqdm

    from glioseg.bundle import open_model

    output = Path(output)
    bundle = open_model(model)
    settings = _settings(bundle, overrides)
    convention = _convention(bundle, labels)
    chosen = list(dict.fromkeys(folds)) if folds else bundle.folds  # a fold named twice is one model, not double weight
    cases = _input_cases(bundle, inputs, patterns, mask) if inputs else []
    if manifest is not None:
        cases = sorted([*cases, *manifest_cases(*manifest, bundle.modalities, bundle.brain_masks)], key=lambda c: c.case)
    if not cases:
        raise GliosegError("nothing to predict", hint="give --input scans or a dataset's --manifest.")
    _check_brain_masks(bundle, cases, mask)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    networks = bundle.models(chosen, device)  # before the output is touched: a model that fails leaves no run record
    _check_output(output, _run_record(bundle, chosen, settings, convention), Path(record) if record else None)
    log.info("%s: %s of folds %s on %s; %d cases into %s", bundle.source, "ensemble" if len(chosen) > 1 else "model",
             ", ".join(map(str, chosen)), device, len(cases), output)
    run = _Run(bundle, networks, settings, convention, device, output, probabilities)
    report = PredictReport()
    for case in tqdm(cases, desc=f"predicting with {bundle.experiment}", unit="case"):
        if run.finished(case):
            report.skipped.append(case.case)
            continue
        try:
            run.predict(case)
            report.written.append(case.case)
        except GliosegError as exc:
            report.failed[case.case] = _failure(exc)
        except (RuntimeError, ValueError, OSError, MemoryError) as exc:  # one case's failure must not lose the others
            log.debug("case %s failed", case.case, exc_info=True)
            report.failed[case.case] = f"{case.where()}: {type(exc).__name__}: {' '.join(str(exc).split())}"
    log.info("%d cases written, %d already there, %d failed", len(report.written), len(report.skipped), len(report.failed))
    if report.failed:
        lines = "\n".join(f"  {case}: {message}" for case, message in report.failed.items())
        raise GliosegError(f"{len(report.failed)} of {len(cases)} cases could not be predicted (the others are in "
                           f"{output}):\n{lines}", hint="fix or remove these cases and run again: finished cases are "
                                                         "skipped.")
    return report


def _failure(exc: GliosegError) -> str:
    """One case's line of the final report: the file, the problem on one line, and what to do about this case."""
    where = f"{exc.path}: " if exc.path is not None else ""
    advice = f"\n      What to do: {exc.hint}" if exc.hint else ""
    return f"{where}{' '.join(exc.problem.split())}{advice}"


def _settings(bundle: Any, overrides: Mapping[str, Any] | None) -> Any:
    """The model's sliding window with ``overrides`` (predict's options), checked against the config schema's limits
    before any case is read: an overlap of 1.5 is one mistake, not one failure per case."""
    import dataclasses

    from glioseg.bundle import inference_problem

    overrides = {k: tuple(v) if k == "roi_size" else v for k, v in (overrides or {}).items()}
    settings = dataclasses.replace(bundle.inference, **overrides)
    problem = inference_problem(settings, bundle.training.spatial_dims)
    if problem is not None:
        options = ", ".join(f"--{key.replace('_', '-')}" for key in overrides) or "none"
        raise GliosegError(f"the sliding window's {problem}", hint=f"check the options that set it ({options}); "
                           "overlap is in [0, 1), threshold between 0 and 1, sw-batch-size and every roi-size side at "
                           f"least 1, with {bundle.training.spatial_dims} roi-size sides for this model.")
    return settings


@dataclass
class _Run:
    """What every case of a run is predicted with, and where it is written."""

    bundle: Any
    networks: list[Any]
    settings: Any
    convention: LabelConvention
    device: Any
    output: Path
    probabilities: bool

    def target(self, case: CaseInput) -> Path:
        return self.output / f"{case.case}.nii.gz"

    def probability_file(self, case: CaseInput) -> Path:
        return self.output / PROBABILITIES / f"{case.case}.nii.gz"

    def finished(self, case: CaseInput) -> bool:
        """Whether a previous run wrote all of this case's files (each written atomically, so a file there is whole)."""
        return self.target(case).is_file() and (not self.probabilities or self.probability_file(case).is_file()) \
            and _slices_written(case, self.output)

    def predict(self, case: CaseInput) -> None:
        """Read, preprocess and predict one case and write its files; a read problem names the input file, a write
        problem the output file."""
        from glioseg.inference import ensemble_probabilities, original_labels
        from glioseg.nifti import voxel_spacing
        from glioseg.preprocess import prepare_image

        if case.problem:
            raise GliosegError(case.problem, path=case.where())
        image, reference, brain = read_case(case)
        try:
            prepared = prepare_image(image, self.bundle.margin, self.bundle.background, mask=brain,
                                     spacing=self.bundle.spacing, case_spacing=voxel_spacing(reference))
        except GliosegError as exc:
            raise GliosegError(exc.problem, path=case.mask or case.where(), hint=exc.hint) from None
        geometry = prepared.geometry
        mean = geometry.to_crop(ensemble_probabilities(self.networks, prepared.image, self.settings, self.device).numpy())
        labels = original_labels(mean, geometry, self.settings.threshold, self.convention)
        self.write(case, labels, geometry.place(mean) if self.probabilities else None, reference)

    def write(self, case: CaseInput, labels: np.ndarray, probabilities: np.ndarray | None, reference: Any) -> None:
        """Write the case's files, each atomically, the label map after its probabilities so that a case is
        finished only when all are there."""
        from glioseg.datasets.lgg import write_slice_masks
        from glioseg.nifti import write_label_map

        writes: list[tuple[Path, Callable[[Path], None]]] = []
        if probabilities is not None:
            writes.append((self.probability_file(case),
                           lambda path: _write_probabilities(path, probabilities, reference, self.bundle.regions)))
        writes.append((self.target(case), lambda path: write_label_map(path, labels, reference)))
        if case.slices is not None:  # the label map's own slices, as the release's per-slice masks
            writes.append((self.output / case.case, lambda path: write_slice_masks(labels, path, case.case)))
        for path, write in writes:
            try:
                write(path)
            except OSError as exc:
                raise GliosegError(f"cannot write the prediction ({exc.strerror or exc})", path=path,
                                   hint=_WRITABLE) from None


def _input_cases(bundle: Any, inputs: Sequence[str | Path], patterns: Mapping[str, str] | None,
                 mask: str | None) -> list[CaseInput]:
    """The cases of ``inputs`` in the form the model was trained on: tif slice folders for a model of an LGG
    kaggle_3m dataset, NIfTI files for any other; with a ``mask`` pattern, each with its brain mask."""
    from glioseg.datasets.layouts import stacks_slices

    if stacks_slices(bundle.dataset.layout):
        if patterns:
            raise GliosegError(f"--modality names NIfTI files, but {bundle.experiment} was trained on LGG kaggle_3m tif "
                               "slices", hint="leave --modality out and give folders of <case>_<n>.tif slices.")
        return find_slice_cases(inputs)
    cases = find_cases(inputs, Matcher(bundle.modalities, patterns))
    if mask is not None:
        find_masks(cases, mask)
    return cases


def _check_brain_masks(bundle: Any, cases: Sequence[CaseInput], mask: str | None) -> None:
    """Refuse, before anything is predicted, to find the brain otherwise than training did: by brain masks for a
    model trained with them, by the background rule for any other."""
    if bundle.brain_masks:
        unmasked = [case.case for case in cases if case.mask is None and not case.problem]
        if unmasked and mask is None:
            shown = ", ".join(unmasked[:5]) + (", …" if len(unmasked) > 5 else "")
            raise GliosegError(f"{bundle.experiment} was trained with brain masks (each training case's brain was its "
                               f"mask file, not the background rule), but {len(unmasked)} case(s) have none: {shown}",
                               hint="give each case's brain mask with --mask PATTERN, a glob relative to the case folder "
                                    "in which {case} is the case's name (e.g. --mask '{case}_brainmask.nii.gz').")
    elif mask is not None:
        raise GliosegError(f"--mask gives brain masks, but {bundle.experiment} was trained without them (its brain was "
                           f"found by the background rule '{bundle.background}'): a mask would crop and z-score the "
                           "scans otherwise than training did", hint="leave --mask out.")


def _slices_written(case: CaseInput, output: Path) -> bool:
    """Whether an LGG case's per-slice masks are all written (always, for a case of NIfTI files)."""
    if case.slices is None:
        return True
    from glioseg.datasets.lgg import slice_count

    try:
        count = slice_count(case.slices)
    except GliosegError:
        return False  # predicted again, and the folder's problem reported there
    return all((output / case.case / f"{case.case}_{n}_mask.tif").is_file() for n in range(1, count + 1))


def _convention(bundle: Any, name: str | None) -> LabelConvention:
    """The convention to write labels in: the training dataset's, or ``name`` when it covers the model's regions."""
    own = bundle.dataset.convention
    if name is None or name == own.name:
        return own
    if name not in CONVENTIONS:
        raise GliosegError(f"unknown label convention '{name}'", hint=f"use one of {sorted(CONVENTIONS)}.")
    chosen = CONVENTIONS[name]
    if set(chosen.regions) != set(bundle.regions):
        raise GliosegError(f"the {name} convention has regions {list(chosen.regions)}, the model predicts {bundle.regions}",
                           hint="choose a convention with the model's regions.")
    return LabelConvention(chosen.name, {r: chosen.members[r] for r in bundle.regions}, chosen.paint)


def _write_probabilities(path: Path, probabilities: np.ndarray, reference: Any, regions: Sequence[str]) -> None:
    """(R, X, Y, Z) probabilities as a float32 (X, Y, Z, R) NIfTI in the reference's geometry; regions named in descrip."""
    import nibabel as nib

    from glioseg.atomic import atomic_path

    header = reference.header.copy()
    header.set_data_dtype(np.float32)
    header["descrip"] = ("regions " + ",".join(regions)).encode("ascii")[:79]
    image = nib.Nifti1Image(np.moveaxis(probabilities.astype(np.float32), 0, -1), reference.affine, header)
    image.set_qform(reference.affine, code=int(reference.header["qform_code"]) or 1)
    image.set_sform(reference.affine, code=int(reference.header["sform_code"]) or 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
