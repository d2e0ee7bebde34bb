"""One PET/CT study → the autoPET volumes: CT, PET (Bq/ml), SUV, CT on the PET grid, lesions.

:func:`convert_study` is the pure per-study task (DICOM in, `Volume`s out) that the corpus
build runs in a process pool or on Dask; :func:`convert_to_layout` adds the writing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from petcorpus.dicom.suv import SuvKind  # a field type of ConversionOptions, resolved at run time
from petcorpus.errors import CorruptFileError, PetcorpusError, Reason, printable
from petcorpus.layouts.autopet import AutopetStudy
from petcorpus.naming import OutputName, name_studies
from petcorpus.volume import Volume, VolumeStream

if TYPE_CHECKING:
    from petcorpus.dicom.scan import ScanResult, Selection, SeriesInfo, StudyInfo
    from petcorpus.dicom.series import LoadedSeries
    from petcorpus.dicom.suv import SuvResult

__all__ = [
    "ConversionOptions",
    "ConvertedStudy",
    "WrittenStudy",
    "convert_study",
    "convert_to_layout",
    "find_studies",
    "write_converted",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ConversionOptions:
    """How one study is converted. Frozen and explicit: it travels to workers and is recorded.

    Parameters
    ----------
    compat : {"autopet"}, optional
        Reproduce the published autoPET files (dicom2nifti orientation and dtypes, the
        recipe's SUV timing, nilearn's cubic B-spline CTres). Implies ``suv_time="autopet"``.
    suv_time : {"qiba", "autopet"}
        Decay-correction time reference of the SUV (see :mod:`petcorpus.dicom.suv`).
    suv : {"bw", "lbm", "bsa"}
        Which SUV the SUV.nii.gz holds: body weight (default), lean body mass (SUL) or
        body surface area.
    ctres_interpolation : {"linear", "bspline", "nearest"}
        Interpolator for CT → PET grid in the default (fast, SimpleITK) mode.
    workers : int, optional
        Threads for reading DICOM, resampling and compressing outputs (default: all
        cores). ``1`` runs the whole study on the calling thread, which is what a batch
        with one study per core wants.
    compat_flavor : {"published", "current"}
        With ``compat="autopet"``: the dtypes of dicom2nifti 2.3 that made the TCIA release
        (PET float32, CT int16) or of dicom2nifti >= 2.4 (float64); see docs/formats.md.
    pet_series, ct_series : str, optional
        SeriesInstanceUIDs to convert instead of the ones the rule picks (see
        :meth:`petcorpus.dicom.scan.StudyInfo.select`); studies without that series keep
        the rule's choice.
    seg : bool
        Convert the lesion SEG (default). ``False`` converts the images of a study whose
        SEG is broken; the sidecar's ``warnings`` then say that the SEG was left out.
    """

    compat: Literal["autopet"] | None = None
    suv_time: Literal["qiba", "autopet"] = "qiba"
    suv: SuvKind = "bw"
    ctres_interpolation: Literal["linear", "bspline", "nearest"] = "linear"
    workers: int | None = None
    compat_flavor: Literal["published", "current"] = "published"
    pet_series: str | None = None
    ct_series: str | None = None
    seg: bool = True

    def __post_init__(self) -> None:
        if self.compat not in (None, "autopet"):
            raise ValueError(f"compat must be None or 'autopet', got {self.compat!r}")
        if self.suv_time not in ("qiba", "autopet"):
            raise ValueError(f"suv_time must be 'qiba' or 'autopet', got {self.suv_time!r}")
        if self.compat_flavor not in ("published", "current"):
            raise ValueError(
                f"compat_flavor must be 'published' or 'current', got {self.compat_flavor!r}"
            )
        if self.suv not in ("bw", "lbm", "bsa"):
            raise ValueError(f"suv must be 'bw', 'lbm' or 'bsa', got {self.suv!r}")

    @property
    def effective_suv_time(self) -> str:
        return "autopet" if self.compat == "autopet" else self.suv_time

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: What :func:`convert_study` returns: the five autoPET volumes and their sidecar.
ConvertedStudy = AutopetStudy


def find_studies(
    root: str | Path, *, workers: int | None = None
) -> tuple[list[StudyInfo], ScanResult]:
    """Scan ``root`` and return (studies, scan result)."""
    from petcorpus.dicom.scan import scan

    result = scan(root, workers=workers)
    return list(result.studies), result


def convert_study(study: StudyInfo, options: ConversionOptions | None = None) -> ConvertedStudy:
    """Convert one scanned study (a :class:`petcorpus.dicom.scan.StudyInfo`) to volumes.

    Chooses the CT and PET (see ``StudyInfo.select``), loads both series, computes the
    SUV factor, resamples the CT onto the PET grid and places the lesion SEG (if any) on
    the PET grid. Raises a :class:`~petcorpus.errors.PetcorpusError` naming the file and
    the reason when anything is missing or inconsistent.
    """
    volumes: dict[str, Volume] = {}

    def keep(name: str, volume: Volume | VolumeStream) -> None:
        volumes[name] = volume.to_volume() if isinstance(volume, VolumeStream) else volume

    sidecar = _produce(study, options or ConversionOptions(), keep)
    return AutopetStudy.from_volumes(volumes, sidecar)


def _produce(
    study: StudyInfo,
    options: ConversionOptions,
    emit: Callable[[str, Volume | VolumeStream], None],
) -> dict[str, Any]:
    """Make the volumes of one study, handing each to ``emit`` as soon as it exists.

    The order (SEG, PET, SUV, then CT and CTres) and the dropped references between the
    steps let a writer free each volume once written: a whole-body study never holds all
    five arrays at once. PET, SUV and CTres come as streams
    (:class:`~petcorpus.volume.VolumeStream`: scaled or resampled slab by slab while they
    are written), and the CT sits in a SimpleITK buffer, so resampling copies nothing.
    Returns the sidecar.
    """
    from petcorpus.dicom.series import load_series, read_dataset
    from petcorpus.dicom.suv import autopet_reference_file, compute_suv
    from petcorpus.resample import resample_stream

    selection = study.select(pet_series=options.pet_series, ct_series=options.ct_series)
    if study.unreadable and options.seg:
        path, why = study.unreadable[0]
        raise CorruptFileError(
            f"{why}; it sits beside this study's series and may be its SEG (or another "
            "series): fix or remove it, or convert the images only with --no-seg",
            path=path,
        )
    pet_series = load_series(selection.pet, workers=options.workers)
    pet_dir = Path(selection.pet.files[0]).parent
    if options.effective_suv_time == "autopet":
        ref = autopet_reference_file(pet_dir)  # the recipe's `next(glob('*.dcm'))`
        suv = compute_suv([read_dataset(ref, stop_before_pixels=True)], "autopet", path=ref)
    else:
        suv = compute_suv(list(pet_series.datasets), "qiba", path=list(pet_series.files))
    factor = suv.factor(f"suv_{options.suv}")  # else raises why, naming the tag and file
    if suv.bqml is None:
        # GML: the pixels already are SUVbw; there is no Bq/ml to report.
        raise PetcorpusError(
            "PET Units are GML (already SUV); Bq/ml cannot be recovered",
            path=pet_dir,
            reason=Reason.UNSUPPORTED,
        )
    rescaled = pet_series.volume
    warnings = list(selection.warnings)
    segs = selection.segs
    if segs and not options.seg:
        warnings.append(f"SEG series {segs[0].series_uid} not converted (--no-seg)")
        segs = []
    seg_volume, seg_uid = _lesion_mask(segs, pet_series, rescaled)
    sidecar = _sidecar(study, selection, suv, factor, options, seg_uid)
    if warnings:  # only then: the sidecars of unambiguous studies keep their bytes
        sidecar["warnings"] = warnings

    if options.compat == "autopet":
        from petcorpus import compat_autopet as compat

        rescale = [
            (
                float(getattr(ds, "RescaleSlope", 1) or 1),
                float(getattr(ds, "RescaleIntercept", 0) or 0),
            )
            for ds in pet_series.datasets
        ]
        ct = load_series(selection.ct, workers=options.workers).volume
        outputs = compat.compat_volumes(
            ct=ct,
            pet_rescaled=rescaled,
            suv_factor=factor,
            seg=seg_volume,
            pet_rescale=rescale,
            flavor=options.compat_flavor,
        )
        for name, vol in zip(("CT", "PET", "SUV", "CTres", "SEG"), outputs, strict=True):
            if vol is not None:
                emit(name, vol)
        return sidecar

    if seg_volume is not None:
        emit("SEG", seg_volume)
    del seg_volume
    # PET in Bq/ml and SUV are scaled slab by slab as they are written: neither exists
    # whole beside the rescaled PET.
    emit("PET", _scaled(rescaled, suv.bqml))
    emit("SUV", _scaled(rescaled, factor))
    # Only the PET grid is needed from here on: a zero-strided array keeps its geometry.
    grid = Volume(np.broadcast_to(np.uint8(0), rescaled.shape), rescaled.affine)
    del rescaled, pet_series
    ct = load_series(selection.ct, workers=options.workers).volume
    emit("CT", ct)
    # Resampled slab by slab as the writer compresses: CTres is never whole in memory.
    ctres = resample_stream(
        ct,
        grid,
        interpolation=options.ctres_interpolation,
        fill=-1024.0,
        dtype=np.float32,
        threads=options.workers,
    )
    del ct
    emit("CTres", ctres)
    return sidecar


def _scaled(volume: Volume, factor: float) -> Volume | VolumeStream:
    """``volume * factor`` as float32 (:func:`_scale`), produced slab by slab when read;
    the volume itself when the factor is exactly 1 and it is float32 already."""
    from petcorpus.resample import SLAB

    array = volume.array
    if factor == 1.0 and array.dtype == np.float32:
        return volume
    nk = volume.shape[2]
    return VolumeStream(
        volume.shape,
        volume.affine,
        np.float32,
        lambda: (_scale(array[:, :, k0 : k0 + SLAB], factor) for k0 in range(0, nk, SLAB)),
    )


def _scale(array: np.ndarray, factor: float) -> np.ndarray:
    """float32 ``array * factor``, each product computed in float64 (one rounding).

    Works in blocks of slices so the float64 temporaries stay small (a whole-body PET in
    float64 would be another ~400 MB); a factor of exactly 1 returns the array itself.
    """
    if factor == 1.0 and array.dtype == np.float32:
        return array
    out = np.empty(array.shape, dtype=np.float32, order="F" if array.flags.f_contiguous else "C")
    # Two slices at a time: the float64 product (~2.5 MB for 400x400) stays in the core's
    # cache, so the pass streams float32 in and out instead of float64 through memory.
    step = 2
    scratch = np.empty((*array.shape[:2], step), dtype=np.float64, order="F")
    for k in range(0, array.shape[2], step):
        block = array[:, :, k : k + step]
        tmp = scratch[:, :, : block.shape[2]]
        np.multiply(block, float(factor), out=tmp, dtype=np.float64)
        out[:, :, k : k + step] = tmp
    return out


def _lesion_mask(
    segs: Sequence[SeriesInfo], pet_series: LoadedSeries, pet: Volume
) -> tuple[Volume | None, str | None]:
    if not segs:
        return None, None
    from petcorpus.dicom.seg import load_seg

    if len(segs) > 1:
        log.warning("%d SEG series reference this PET; using %s", len(segs), segs[0].series_uid)
    seg_info = segs[0]
    result = load_seg(
        seg_info.files[0],
        pet,
        reference_sop_uids=list(pet_series.sop_instance_uids),
        reference_series_uid=str(pet_series.datasets[0].SeriesInstanceUID),
        frame_of_reference_uid=str(getattr(pet_series.datasets[0], "FrameOfReferenceUID", ""))
        or None,
        mode="masks",  # only the union is kept: no label map to build
    )
    return result.union(), seg_info.series_uid


def _sidecar(
    study: StudyInfo,
    selection: Selection,
    suv: SuvResult,
    factor: float,
    options: ConversionOptions,
    seg_uid: str | None,
) -> dict[str, Any]:
    from petcorpus import __version__

    inputs = _strip_paths(_jsonable(dict(suv.inputs)))
    return {
        "petcorpus_version": __version__,
        "created_by": f"petcorpus {__version__} (Python {platform.python_version()})",
        "study_instance_uid": str(study.study_uid),
        "ct_series_instance_uid": selection.ct.series_uid,
        "pet_series_instance_uid": selection.pet.series_uid,
        "seg_series_instance_uid": seg_uid,
        "selection_reasons": list(selection.reasons),
        "suv": {
            "kind": options.suv,
            "factor": float(factor),
            "bqml_factor": suv.bqml,
            "suv_bw": suv.suv_bw,
            "suv_lbm": suv.suv_lbm,
            "suv_bsa": suv.suv_bsa,
            "time_reference": options.effective_suv_time,
            "inputs": inputs,
            "errors": dict(suv.errors),
        },
        # Only what shapes the content: thread counts must not change the bytes (and the
        # series choice is in selection_reasons and warnings).
        "options": {
            k: v for k, v in options.as_dict().items() if k not in _NOT_IN_SIDECAR_OPTIONS
        },
        "files": {
            "CT": "CT in HU, int16, native CT grid",
            "PET": "PET in Bq/ml, float32, PET grid",
            "SUV": f"SUV{options.suv} (PET x factor), float32, PET grid",
            "CTres": "CT resampled to the PET grid, float32, fill -1024",
            "SEG": "lesion mask 0/1, uint8, PET grid",
        },
    }


_NOT_IN_SIDECAR_OPTIONS = frozenset({"workers", "pet_series", "ct_series", "seg"})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Path):
        return printable(value.name)  # a file name, never a full path that may hold identifiers
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return printable(value)  # a file name that is not UTF-8 cannot be written as JSON
    if value is None or isinstance(value, int | float | bool):
        return value
    return printable(str(value))


def _strip_paths(value: Any) -> Any:
    """Keep only file names under "file" keys: folder names may identify the patient."""
    if isinstance(value, dict):
        return {
            k: (Path(v).name if k == "file" and isinstance(v, str) else _strip_paths(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_strip_paths(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class WrittenStudy:
    """Files of one converted study and their SHA-256, computed while writing."""

    paths: dict[str, Path]
    sha256: dict[str, str]
    #: choices and omissions the user should know of (the sidecar's ``warnings``)
    warnings: tuple[str, ...] = ()


def convert_to_layout(
    study: StudyInfo,
    out: str | Path,
    options: ConversionOptions | None = None,
    *,
    name: OutputName | None = None,
) -> dict[str, Path]:
    """Convert a study and write ``<out>/<subject>/<study>/{CT,...}.nii.gz`` atomically.

    The folder is ``name``, by default the study's own name under the rule of
    :mod:`petcorpus.naming` (name several studies together with
    :func:`~petcorpus.naming.name_studies`, which keeps their folders apart). Volumes are
    compressed as they are produced and released once written (CTres slab by slab as it
    is resampled), so peak memory stays near two whole-body volumes; the study folder
    appears (by rename) only when every file and the sidecar are complete. Returns file
    name (``CT`` ... ``SEG``, ``sidecar``) → path.

    Raises
    ------
    PetcorpusError
        Reason ``OUTPUT_COLLISION`` when the folder already holds another study's outputs.
    """
    return write_converted(study, out, options, name=name).paths


def _check_owner(folder: Path, study_uid: str) -> None:
    """Refuse to replace a folder that holds another study's outputs (its sidecar says so)."""
    import json

    from petcorpus.layouts.autopet import SIDECAR

    try:
        owner = json.loads((folder / SIDECAR).read_bytes()).get("study_instance_uid")
    except (OSError, ValueError, AttributeError):
        return  # no folder, or no readable sidecar: nothing to protect
    if owner and owner != study_uid:
        raise PetcorpusError(
            f"already holds study {owner}; not overwriting it with study {study_uid}",
            path=folder,
            reason=Reason.OUTPUT_COLLISION,
        )


def write_converted(
    study: StudyInfo,
    out: str | Path,
    options: ConversionOptions | None = None,
    *,
    name: OutputName | None = None,
    drop_cache: bool = False,
) -> WrittenStudy:
    """:func:`convert_to_layout`, also returning each file's SHA-256 (for the catalog).

    ``drop_cache``: drop each written file from the page cache after its fsync (a batch
    build does not read them back; see :func:`petcorpus.atomic.atomic_write`).
    """
    import contextlib
    import functools
    import hashlib
    from concurrent.futures import Future, ThreadPoolExecutor

    from petcorpus.atomic import atomic_dir
    from petcorpus.layouts.autopet import (
        COMPAT_DTYPES,
        DTYPES,
        SIDECAR,
        file_name,
        sidecar_bytes,
    )
    from petcorpus.nifti import write_nifti_sha256

    options = options or ConversionOptions()
    name = name or name_studies([study])[str(study.study_uid)]
    final = Path(out) / name.subject / name.study
    _check_owner(final, str(study.study_uid))
    dtypes = COMPAT_DTYPES[options.compat_flavor] if options.compat == "autopet" else DTYPES
    threads = max(1, min(2, options.workers or os.cpu_count() or 1))
    pending: dict[str, Future[tuple[Path, str]]] = {}
    # One thread: write each volume as it comes, on this thread. A background writer
    # would make a "one study per core" batch run 1.3 cores per study.
    background = ThreadPoolExecutor(threads) if threads > 1 else None
    with atomic_dir(final) as tmp, background or contextlib.nullcontext():

        def emit(name: str, volume: Volume | VolumeStream) -> None:
            if name == "CT":  # wait for PET/SUV/SEG: their arrays are freed once written
                for fut in pending.values():
                    fut.result()
            path = tmp / file_name(name)
            write = functools.partial(
                write_nifti_sha256, volume, path, dtype=dtypes[name], drop_cache=drop_cache
            )
            if background is not None:
                pending[name] = background.submit(write)
            else:
                pending[name] = done = Future[tuple[Path, str]]()
                done.set_result(write())

        sidecar = _produce(study, options, emit)
        digests = {name: fut.result()[1] for name, fut in pending.items()}
        sidecar["subject"] = name.subject
        sidecar["study"] = name.study
        blob = sidecar_bytes(sidecar)
        (tmp / SIDECAR).write_bytes(blob)
        digests["sidecar"] = hashlib.sha256(blob).hexdigest()
    paths = {name: final / file_name(name) for name in digests if name != "sidecar"}
    paths["sidecar"] = final / SIDECAR
    return WrittenStudy(paths=paths, sha256=digests, warnings=tuple(sidecar.get("warnings", ())))
