"""A synthetic whole-body FDG-PET/CT study written as real DICOM (CT, PET, SEG).

:func:`make_study` builds the datasets in memory together with the truth (HU, Bq/ml, SUV,
lesion mask, the expected SUV factors); :func:`write_study` puts them in a TCIA-like tree.
Everything is deterministic for a seed. Nothing resembles a real patient: names, IDs and
dates are synthetic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from scipy import ndimage

from petcorpus.phantom.anatomy import (
    LESION_HU,
    LESION_HU_CONTRAST,
    LESION_HU_SD,
    TISSUES,
    Body,
    Lesion,
    Shape,
    Tissue,
    make_body,
    paint_lesions,
)
from petcorpus.phantom.placement import make_lesions
from petcorpus.phantom.slices import (
    TRACERS,
    SeriesIds,
    common_dataset,
    ct_datasets,
    ds_text,
    pet_datasets,
)
from petcorpus.volume import Volume, lps_to_ras

__all__ = [
    "DIAGNOSES",
    "TRACER_NAMES",
    "PhantomGeometry",
    "PhantomStudy",
    "PhantomTruth",
    "Tracer",
    "Vendor",
    "make_study",
    "write_study",
]

Vendor = Literal["siemens", "ge", "philips"]
Tracer = Literal["FDG", "PSMA-Ga68", "PSMA-F18"]
TRACER_NAMES: tuple[str, ...] = tuple(TRACERS)
DIAGNOSES = ("LYMPHOMA", "MELANOMA", "LUNG_CANCER", "NEGATIVE")
PET_FWHM_MM = 6.0
#: PSMA uptake (SUVbw, typical of Ga-68 PSMA-11 and F-18 PSMA-1007): kidneys and salivary
#: glands very high, bladder high (urinary excretion), liver and spleen moderate, brain low
PSMA_SUV: dict[Tissue, float] = {
    Tissue.AIR: 0.0,
    Tissue.FAT: 0.2,
    Tissue.MUSCLE: 0.6,
    Tissue.SKIN: 0.4,
    Tissue.LUNG: 0.4,
    Tissue.BONE: 0.9,
    Tissue.LIVER: 5.5,
    Tissue.HEART: 1.5,
    Tissue.KIDNEY: 30.0,
    Tissue.BLADDER: 25.0,
    Tissue.BRAIN: 0.3,
    Tissue.AORTA: 1.4,
    Tissue.SPLEEN: 5.0,
    Tissue.SALIVARY: 14.0,
}


@dataclasses.dataclass(frozen=True)
class PhantomGeometry:
    """Grid sizes. ``full`` is what a Biograph mCT writes; ``small`` keeps the same field of
    view with coarser voxels so a study is built in well under a second."""

    ct_matrix: int
    ct_pixel_mm: float
    pet_matrix: int
    pet_pixel_mm: float
    n_slices: int
    slice_mm: float
    slices_per_bed: int

    @classmethod
    def preset(cls, size: str) -> PhantomGeometry:
        if size == "full":
            return cls(512, 0.9765625, 400, 2.0364, 326, 3.0, 74)
        if size == "small":
            return cls(128, 3.90625, 100, 8.1456, 80, 12.0, 18)
        raise ValueError(f"size must be 'small' or 'full', got {size!r}")


@dataclasses.dataclass(frozen=True)
class PhantomTruth:
    """What a correct converter must recover from the DICOM files."""

    ct_hu: Volume  # int16, CT grid
    pet_bqml: Volume  # float32, PET grid, per-slice rescale applied, decay-corrected to scan start
    suv: Volume  # float32, PET grid, pet_bqml x suv_factors["bw"]
    lesion_mask: Volume  # uint8 0/1, PET grid
    ct_labels: Volume  # uint8 tissue labels (phantom.anatomy.Tissue), CT grid
    pet_labels: Volume  # uint8 tissue labels, PET grid
    lesions: tuple[Lesion, ...]
    suv_factors: dict[str, float]  # "bw" (g/ml), "lbm" (g/ml), "bsa" (cm2/ml), QIBA timing
    bqml_factor: float  # rescaled pixel value -> Bq/ml (1 for BQML, 7053,1009 for Philips)
    weight_kg: float
    height_m: float
    sex: str
    age: int
    injected_dose_bq: float
    injection_time: dt.datetime
    scan_start: dt.datetime
    diagnosis: str
    tracer: str = "FDG"
    half_life_s: float = TRACERS["FDG"].half_life_s


@dataclasses.dataclass
class PhantomStudy:
    """DICOM datasets of one study plus its truth and the TCIA-style names."""

    subject_id: str
    study_uid: str
    study_folder: str
    vendor: str
    ct: list[Dataset]
    pet: list[Dataset]
    seg: Dataset | None
    truth: PhantomTruth

    @property
    def series(self) -> dict[str, list[Dataset]]:
        out = {"CT": self.ct, "PT": self.pet}
        if self.seg is not None:
            out["SEG"] = [self.seg]
        return out


# -- helpers ------------------------------------------------------------------------------------
def _uid(seed_parts: list[str]) -> str:
    return str(generate_uid(entropy_srcs=["petcorpus-phantom", *seed_parts]))


def _axis(n: int, pixel: float, offset: float) -> np.ndarray:
    return (np.arange(n) - (n - 1) / 2.0) * pixel + offset


def _lbm_kg(weight: float, height_m: float, sex: str) -> float:
    """Lean body mass, Janmahasatian et al. 2005."""
    bmi = weight / height_m**2
    if sex == "M":
        return 9270.0 * weight / (6680.0 + 216.0 * bmi)
    return 9270.0 * weight / (8780.0 + 244.0 * bmi)


def _bsa_m2(weight: float, height_m: float) -> float:
    """Body surface area, Du Bois & Du Bois 1916."""
    return 0.007184 * weight**0.425 * (height_m * 100.0) ** 0.725


# -- the study ----------------------------------------------------------------------------------
def make_study(
    seed: int = 0,
    size: Literal["small", "full"] = "small",
    vendor: Vendor = "siemens",
    diagnosis: str | None = None,
    contrast: bool = False,
    seg_segments: int = 1,
    seg_frame_order: Literal["sorted", "shuffled"] = "sorted",
    seg_all_frames: bool = False,
    midnight: bool = False,
    index: int = 0,
    tracer: Tracer = "FDG",
) -> PhantomStudy:
    """Build one synthetic PET/CT study.

    Parameters
    ----------
    seed : int
        Everything (anatomy, uptake, noise, UIDs, dates) follows from it.
    size : {"small", "full"}
        Grid preset, see :class:`PhantomGeometry`.
    vendor : {"siemens", "ge", "philips"}
        Which scanner's tags to write (time tags, private SUV tags, Units).
    diagnosis : str, optional
        One of :data:`DIAGNOSES`; drawn from ``seed`` when omitted. ``NEGATIVE`` studies
        have no lesions and a SEG with one empty segment, as in the published data.
    contrast : bool
        Contrast-enhanced CT (vessels, heart, kidneys, liver brighter).
    seg_segments : int
        Spread the lesions over this many SEG segments (round robin).
    seg_frame_order : {"sorted", "shuffled"}
        Store the SEG frames in slice order or shuffled (readers must place frames by position).
    seg_all_frames : bool
        Write a SEG frame for every PET slice instead of only slices holding a lesion.
    midnight : bool
        Inject before and scan after midnight (dates differ).
    index : int
        Number of the subject within a corpus (only used in the synthetic patient name).
    tracer : {"FDG", "PSMA-Ga68", "PSMA-F18"}
        FDG (default), Ga-68 PSMA-11 or F-18 PSMA-1007: the radionuclide's half-life, a
        typical dose and uptake time, the header's Radiopharmaceutical and
        RadionuclideCodeSequence, PSMA uptake (salivary glands, kidneys, bladder, liver high,
        brain low) and, for Siemens and GE, the PSMA cohort's scanner models.
    """
    if tracer not in TRACERS:
        raise ValueError(f"tracer must be one of {tuple(TRACERS)}, got {tracer!r}")
    tr = TRACERS[tracer]
    psma = tracer != "FDG"
    rng = np.random.default_rng(seed)
    geo = PhantomGeometry.preset(size)
    if diagnosis is None:
        diagnosis = str(rng.choice(DIAGNOSES))
    if diagnosis not in DIAGNOSES:
        raise ValueError(f"diagnosis must be one of {DIAGNOSES}, got {diagnosis!r}")
    subject_id = "PETCT_" + "".join(f"{b:02x}" for b in rng.bytes(5))
    sex = str(rng.choice(["M", "F"]))
    age = int(rng.integers(25, 86))
    height_m = round(float(rng.uniform(1.62, 1.95) if sex == "M" else rng.uniform(1.52, 1.80)), 2)
    weight_kg = round(float(rng.uniform(52, 115)), 1)
    dose_bq = round(float(rng.uniform(tr.dose_mbq[0] * 1e6, tr.dose_mbq[1] * 1e6)), -3)
    study_day = dt.datetime(2003, 1, 6) + dt.timedelta(days=int(rng.integers(0, 3650)))
    if midnight:
        injection = study_day.replace(hour=23, minute=12, second=int(rng.integers(0, 60)))
    else:
        injection = study_day + dt.timedelta(
            hours=int(rng.integers(7, 16)),
            minutes=int(rng.integers(0, 60)),
            seconds=int(rng.integers(0, 60)),
        )
    uptake_s = int(rng.integers(tr.uptake_min[0] * 60, tr.uptake_min[1] * 60))
    scan_start = injection + dt.timedelta(seconds=uptake_s)
    ct_time = scan_start - dt.timedelta(minutes=4, seconds=int(rng.integers(0, 60)))

    # Grids (LPS+ mm). PET and CT share slice positions; the PET field of view is wider and
    # its centre is offset by a fraction of a voxel so resampling is never trivial.
    z_first = -1200.0 + float(rng.integers(0, 200))
    zs = z_first + np.arange(geo.n_slices) * geo.slice_mm
    z_top = float(zs[-1]) + 20.0
    ct_x = _axis(geo.ct_matrix, geo.ct_pixel_mm, 0.0)
    ct_y = _axis(geo.ct_matrix, geo.ct_pixel_mm, 0.0)
    pet_x = _axis(geo.pet_matrix, geo.pet_pixel_mm, 0.7)
    pet_y = _axis(geo.pet_matrix, geo.pet_pixel_mm, -1.3)

    body: Body = make_body(
        rng, z_top, width_scale=float(np.clip(weight_kg / 80.0, 0.85, 1.2)), salivary=psma
    )
    lesions = make_lesions(
        rng,
        body,
        diagnosis,
        min_radius=1.2 * max(geo.pet_pixel_mm, geo.slice_mm),
        gap=1.5 * max(geo.pet_pixel_mm, geo.slice_mm),
        # the lesion as drawn in CT (one CT pixel wider) and 3 mm more stay in its tissue
        margin=geo.ct_pixel_mm + 3.0,
        placement_rng=np.random.default_rng([seed, 22]),
    )

    # CT: HU from the tissue table plus noise, stored as the vendor's integer type. Lesions
    # are soft tissue, drawn one CT pixel wider than in PET so that every PET lesion voxel
    # reads soft tissue however the CT is resampled to the PET grid.
    ct_labels = body.labels_on_grid(ct_x, ct_y, zs)
    lut_hu = np.array([TISSUES[t].hu_contrast if contrast else TISSUES[t].hu for t in Tissue])
    lut_sd = np.array([TISSUES[t].hu_sd for t in Tissue])
    hu_mean, hu_sd = lut_hu[ct_labels], lut_sd[ct_labels]
    if lesions:
        d = geo.ct_pixel_mm
        grown = [
            Lesion(Shape(les.shape.center, (rx + d, ry + d, rz + d)), 0.0, "")
            for les in lesions
            for rx, ry, rz in [les.shape.radii]
        ]
        in_lesion = paint_lesions(grown, ct_x, ct_y, zs).astype(bool)
        hu_mean[in_lesion] = LESION_HU_CONTRAST if contrast else LESION_HU
        hu_sd[in_lesion] = LESION_HU_SD
    hu = hu_mean + rng.standard_normal(ct_labels.shape, dtype=np.float32) * hu_sd
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    # PET: SUV map with lesions, blurred to scanner resolution, with noise.
    pet_labels = body.labels_on_grid(pet_x, pet_y, zs)
    lut_suv = np.array([PSMA_SUV[t] if psma else TISSUES[t].suv for t in Tissue], dtype=np.float64)
    suv_ideal = lut_suv[pet_labels]
    lesion_mask = paint_lesions(lesions, pet_x, pet_y, zs, suv_ideal)
    sigma_mm = PET_FWHM_MM / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    suv_blur = ndimage.gaussian_filter(
        suv_ideal, sigma=[sigma_mm / geo.pet_pixel_mm] * 2 + [sigma_mm / geo.slice_mm]
    )
    suv_noisy = np.clip(
        suv_blur + rng.standard_normal(suv_blur.shape) * 0.08 * np.sqrt(suv_blur), 0.0, None
    )

    half_life = tr.half_life_s
    decayed_dose = dose_bq * 0.5 ** ((scan_start - injection).total_seconds() / half_life)
    factors = {
        "bw": weight_kg * 1000.0 / decayed_dose,
        "lbm": _lbm_kg(weight_kg, height_m, sex) * 1000.0 / decayed_dose,
        "bsa": _bsa_m2(weight_kg, height_m) * 1e4 / decayed_dose,
    }
    activity = suv_noisy / factors["bw"]  # Bq/ml, decay-corrected to scan start
    # Philips stores counts: Bq/ml = counts x (7053,1009).
    bqml_factor = (
        float(ds_text(round(float(rng.uniform(4.0, 9.0)), 4))) if vendor == "philips" else 1.0
    )

    ct_affine = lps_to_ras(_grid_affine(ct_x, ct_y, zs, geo.ct_pixel_mm, geo.slice_mm))
    pet_affine = lps_to_ras(_grid_affine(pet_x, pet_y, zs, geo.pet_pixel_mm, geo.slice_mm))

    uid = lambda *p: _uid([str(seed), vendor, *p])  # noqa: E731 - tiny local alias
    ids = SeriesIds(
        study=uid("study"),
        frame=uid("for"),
        ct_series=uid("ct"),
        pet_series=uid("pet"),
        seg_series=uid("seg"),
    )
    common = common_dataset(
        subject_id, index, sex, age, weight_kg, height_m, study_day, ct_time, ids
    )
    models = tr.models.get(vendor)
    model = models[seed % len(models)] if models else None
    ct = ct_datasets(
        hu, ct_x, ct_y, zs, geo, vendor, contrast, ct_time, common, ids, uid, rng, model
    )
    pet, stored_bqml = pet_datasets(
        activity / bqml_factor,
        pet_x,
        pet_y,
        zs,
        geo,
        vendor,
        common,
        ids,
        uid,
        injection,
        scan_start,
        dose_bq,
        factors["bw"],
        bqml_factor,
        tr,
        model,
    )
    truth = PhantomTruth(
        ct_hu=Volume(hu, ct_affine),
        pet_bqml=Volume(stored_bqml, pet_affine),
        suv=Volume(
            (stored_bqml.astype(np.float64) * factors["bw"]).astype(np.float32), pet_affine
        ),
        lesion_mask=Volume(lesion_mask, pet_affine),
        ct_labels=Volume(ct_labels, ct_affine),
        pet_labels=Volume(pet_labels, pet_affine),
        lesions=tuple(lesions),
        suv_factors=factors,
        bqml_factor=bqml_factor,
        weight_kg=weight_kg,
        height_m=height_m,
        sex=sex,
        age=age,
        injected_dose_bq=dose_bq,
        injection_time=injection,
        scan_start=scan_start,
        diagnosis=diagnosis,
        tracer=tracer,
        half_life_s=half_life,
    )
    from petcorpus.phantom.seg import make_seg  # highdicom: imported when needed

    seg = make_seg(
        pet,
        lesions,
        pet_x,
        pet_y,
        zs,
        lesion_mask,
        ids.seg_series,
        uid("seg-sop"),
        segments=seg_segments,
        all_frames=seg_all_frames,
        shuffled=seg_frame_order == "shuffled",
        rng=rng,
    )
    folder = (
        f"{study_day:%m-%d-%Y}-NA-PET-CT Ganzkoerper  primaer mit KM-"
        f"{int(rng.integers(10000, 99999))}"
    )
    return PhantomStudy(subject_id, ids.study, folder, vendor, ct, pet, seg, truth)


def _grid_affine(
    xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, pixel: float, slice_mm: float
) -> np.ndarray:
    aff = np.diag([pixel, pixel, slice_mm, 1.0])
    aff[:3, 3] = [xs[0], ys[0], zs[0]]
    return aff


def write_study(study: PhantomStudy, root: str | Path) -> Path:
    """Write a study as ``<root>/<subject>/<study folder>/<series folder>/1-NNN.dcm``.

    Returns the study folder.
    """
    study_dir = Path(root) / study.subject_id / study.study_folder
    names = {
        "CT": "2.000000-CT IMAGES",
        "PT": "4.000000-PET corr.",
        "SEG": "300.000000-Segmentation",
    }
    for modality, datasets in study.series.items():
        series_dir = study_dir / f"{names[modality]}-{_series_suffix(datasets[0])}"
        series_dir.mkdir(parents=True, exist_ok=True)
        for ds in datasets:
            number = int(getattr(ds, "InstanceNumber", 1) or 1)
            ds.save_as(series_dir / f"1-{number:03d}.dcm", enforce_file_format=True)
    return study_dir


def _series_suffix(ds: Dataset) -> str:
    return str(int(str(ds.SeriesInstanceUID).replace(".", "")[-5:]) % 90000 + 10000)
