"""The phantom's DICOM slices: the CT and PET datasets of a study, vendor by vendor.

Used by :func:`petcorpus.phantom.make_study`; the values are synthetic (see there).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from petcorpus.dicom.values import RADIONUCLIDES

if TYPE_CHECKING:
    from petcorpus.phantom.study import PhantomGeometry

__all__ = [
    "CT_IMAGE_STORAGE",
    "F18_HALF_LIFE_S",
    "PET_IMAGE_STORAGE",
    "TRACERS",
    "VENDOR_TAGS",
    "PhantomTracer",
    "SeriesIds",
    "common_dataset",
    "ct_datasets",
    "dicom_date_time",
    "ds_text",
    "pet_datasets",
]

F18_HALF_LIFE_S = RADIONUCLIDES["F-18"].half_life_s


@dataclasses.dataclass(frozen=True)
class PhantomTracer:
    """A tracer the phantom injects: what the header calls it and the usual dose and wait."""

    name: str
    radiopharmaceutical: str
    radionuclide: str  # a key of petcorpus.dicom.values.RADIONUCLIDES
    positron_fraction: str
    dose_mbq: tuple[float, float]
    uptake_min: tuple[int, int]
    #: ManufacturerModelName per vendor where it differs from the FDG scanners
    models: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def half_life_s(self) -> float:
        return RADIONUCLIDES[self.radionuclide].half_life_s

    @property
    def code(self) -> tuple[str, str]:
        """RadionuclideCodeSequence (SRT value, meaning) as the scanners of the time wrote it."""
        return {"F-18": ("C-111A1", "^18^Fluorine"), "Ga-68": ("C-131A3", "^68^Gallium")}[
            self.radionuclide
        ]


# The PSMA cohort's scanners (TCIA PSMA-PET-CT-Lesions: Siemens Biograph mCT Flow 20 and
# Biograph 64-4R TruePoint, GE Discovery 690); doses and waits as the EANM/SNMMI guidelines.
_PSMA_MODELS = {
    "siemens": ("Biograph mCT Flow 20", "Biograph64"),
    "ge": ("Discovery 690",),
}
TRACERS: dict[str, PhantomTracer] = {
    "FDG": PhantomTracer("FDG", "Fluorodeoxyglucose", "F-18", "0.9673", (300, 350), (55, 76)),
    # Ga-68 PSMA-11 (gozetotide): 1.8-2.2 MBq/kg, about 150 MBq, 60 min p.i.
    "PSMA-Ga68": PhantomTracer(
        "PSMA-Ga68", "Ga-68 PSMA-11", "Ga-68", "0.8891", (120, 200), (55, 76), _PSMA_MODELS
    ),
    # F-18 PSMA-1007: about 4 MBq/kg, 250-350 MBq, 90-120 min p.i.
    "PSMA-F18": PhantomTracer(
        "PSMA-F18", "F-18 PSMA-1007", "F-18", "0.9673", (250, 350), (90, 121), _PSMA_MODELS
    ),
}
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"


def ds_text(value: float) -> str:
    """A DS string (<= 16 characters) that parses back to the value used for the truth."""
    return format_number_as_ds(float(value))


def dicom_date_time(t: dt.datetime) -> tuple[str, str]:
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S.%f")[:13]


@dataclasses.dataclass(frozen=True)
class SeriesIds:
    study: str
    frame: str
    ct_series: str
    pet_series: str
    seg_series: str


def common_dataset(
    subject_id: str,
    index: int,
    sex: str,
    age: int,
    weight: float,
    height: float,
    study_day: dt.datetime,
    study_time: dt.datetime,
    ids: SeriesIds,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"Phantom^Subject{index:04d}"
    ds.PatientID = subject_id
    ds.PatientBirthDate = ""
    ds.PatientSex = sex
    ds.PatientAge = f"{age:03d}Y"
    ds.PatientWeight = ds_text(weight)
    ds.PatientSize = ds_text(height)
    ds.StudyInstanceUID = ids.study
    ds.StudyDate = study_day.strftime("%Y%m%d")
    ds.StudyTime = study_time.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "PET-CT Ganzkoerper  primaer mit KM"
    ds.FrameOfReferenceUID = ids.frame
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "WHOLEBODY"
    return ds


VENDOR_TAGS = {
    "siemens": {
        "Manufacturer": "SIEMENS",
        "ManufacturerModelName": "Biograph128",
        "ct_kernel": "B30f",
        "pet_recon": "PSF+TOF 2i21s",
        "pet_kernel": "XYZ Gauss2.00",
        "ct_signed": False,
    },
    "ge": {
        "Manufacturer": "GE MEDICAL SYSTEMS",
        "ManufacturerModelName": "Discovery MI",
        "ct_kernel": "STANDARD",
        "pet_recon": "VPFXS 2i24s",
        "pet_kernel": "Gaussian 2.00",
        "ct_signed": True,
    },
    "philips": {
        "Manufacturer": "Philips Medical Systems",
        "ManufacturerModelName": "Vereos PET/CT",
        "ct_kernel": "B",
        "pet_recon": "BLOB-OS-TF 3i17s",
        "pet_kernel": "Gaussian 2.00",
        "ct_signed": True,
    },
}


def _imagecommon_dataset(
    ds: Dataset,
    common: Dataset,
    vendor: str,
    xs: np.ndarray,
    ys: np.ndarray,
    z: float,
    pixel: float,
    slice_mm: float,
    model: str | None = None,
) -> None:
    ds.update(common)
    ds.Manufacturer = VENDOR_TAGS[vendor]["Manufacturer"]
    ds.ManufacturerModelName = model or VENDOR_TAGS[vendor]["ManufacturerModelName"]
    ds.DeviceSerialNumber = "PHANTOM"
    ds.SoftwareVersions = "petcorpus-phantom"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [ds_text(xs[0]), ds_text(ys[0]), ds_text(z)]
    ds.PixelSpacing = [ds_text(pixel), ds_text(pixel)]
    ds.SliceThickness = ds_text(slice_mm)
    ds.SliceLocation = ds_text(z)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ys.size
    ds.Columns = xs.size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15


def _new_image(
    sop_class: str,
    sop: str,
    modality: str,
    series_uid: str,
    series_number: int,
    description: str,
    series_dt: tuple[str, str],
    acq_dt: tuple[str, str],
    instance: int,
) -> Dataset:
    """A slice's SOP, series and timing attributes (instances numbered from the head)."""
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.SeriesDate, ds.SeriesTime = series_dt
    ds.AcquisitionDate, ds.AcquisitionTime = acq_dt
    ds.ContentDate, ds.ContentTime = acq_dt
    ds.InstanceNumber = instance
    return ds


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.10.1463.1")
    meta.ImplementationVersionName = "PETCORPUS_01"
    return meta


def ct_datasets(
    hu: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    zs: np.ndarray,
    geo: PhantomGeometry,
    vendor: str,
    contrast: bool,
    ct_time: dt.datetime,
    common: Dataset,
    ids: SeriesIds,
    uid,
    rng: np.random.Generator,
    model: str | None = None,
) -> list[Dataset]:
    tags = VENDOR_TAGS[vendor]
    signed = bool(tags["ct_signed"])
    stored = (hu.astype(np.int32) + 1024).astype(np.int16 if signed else np.uint16)
    tube_ma = int(rng.integers(80, 260))
    date, time = dicom_date_time(ct_time)
    out = []
    n = zs.size
    for k, z in enumerate(zs):
        ds = _new_image(
            CT_IMAGE_STORAGE,
            uid("ct", str(k)),
            "CT",
            ids.ct_series,
            2,
            "CT IMAGES",
            (date, time),
            (date, time),
            n - k,
        )
        _imagecommon_dataset(
            ds, common, vendor, xs, ys, float(z), geo.ct_pixel_mm, geo.slice_mm, model
        )
        ds.AcquisitionNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.KVP = "120"
        ds.XRayTubeCurrent = tube_ma
        ds.ExposureTime = 500
        ds.Exposure = round(tube_ma * 0.5)
        ds.ConvolutionKernel = tags["ct_kernel"]
        ds.FilterType = "FLAT"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = ds_text(geo.ct_pixel_mm * geo.ct_matrix)
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        if contrast:
            ds.ContrastBolusAgent = "Iomeprol 350"
            ds.ContrastBolusRoute = "IV"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        out.append(ds)
    return out


def pet_datasets(
    values: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    zs: np.ndarray,
    geo: PhantomGeometry,
    vendor: str,
    common: Dataset,
    ids: SeriesIds,
    uid,
    injection: dt.datetime,
    scan_start: dt.datetime,
    dose_bq: float,
    suv_bw: float,
    bqml_factor: float,
    tracer: PhantomTracer = TRACERS["FDG"],
    model: str | None = None,
) -> tuple[list[Dataset], np.ndarray]:
    """PET slices with a per-slice RescaleSlope; returns them and the Bq/ml a reader gets."""
    tags = VENDOR_TAGS[vendor]
    n = zs.size
    bed_s = 150.0
    series_time = scan_start
    if vendor == "ge":  # GE rewrites SeriesTime on post-processing: it is after the scan
        series_time = scan_start + dt.timedelta(minutes=41, seconds=17)
    s_date, s_time = dicom_date_time(series_time)
    i_date, i_time = dicom_date_time(injection)
    bqml_out = np.empty(values.shape, dtype=np.float32)
    out = []
    for k, z in enumerate(zs):
        plane = values[:, :, k]
        vmax = float(plane.max())
        slope = float(ds_text(vmax / 32767.0)) if vmax > 0 else 1.0
        stored = np.clip(np.rint(plane / slope), 0, 32767).astype(np.int16)
        bqml_out[:, :, k] = (stored.astype(np.float64) * slope * bqml_factor).astype(np.float32)
        bed = (n - 1 - k) // geo.slices_per_bed  # beds acquired from the head down
        acq = scan_start + dt.timedelta(seconds=bed * bed_s)
        a_date, a_time = dicom_date_time(acq)
        ds = _new_image(
            PET_IMAGE_STORAGE,
            uid("pet", str(k)),
            "PT",
            ids.pet_series,
            4,
            "PET corr.",
            (s_date, s_time),
            (a_date, a_time),
            n - k,
        )
        _imagecommon_dataset(
            ds, common, vendor, xs, ys, float(z), geo.pet_pixel_mm, geo.slice_mm, model
        )
        ds.ImageIndex = n - k
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = ds_text(slope)
        ds.Units = "CNTS" if vendor == "philips" else "BQML"
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN"]
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["WHOLE BODY", "IMAGE"]
        ds.RandomsCorrectionMethod = "DLYD"
        ds.AttenuationCorrectionMethod = "measured,AC_CT"
        ds.ScatterCorrectionMethod = "Model-based"
        ds.ReconstructionMethod = tags["pet_recon"]
        ds.ConvolutionKernel = tags["pet_kernel"]
        ds.NumberOfSlices = n
        # One static whole-body frame: its reference is the series start for every bed
        # (per-bed values make dcm2niix split the series into time frames).
        ds.FrameReferenceTime = "0"
        ds.ActualFrameDuration = int(bed_s * 1000)
        ds.DecayFactor = ds_text(2.0 ** ((acq - scan_start).total_seconds() / tracer.half_life_s))
        ds.DoseCalibrationFactor = "1"
        ds.SliceSensitivityFactor = "1"
        ds.PatientGantryRelationshipCodeSequence = []
        rp = Dataset()
        rp.Radiopharmaceutical = tracer.radiopharmaceutical
        rp.RadiopharmaceuticalVolume = "0"
        rp.RadiopharmaceuticalStartTime = i_time
        rp.RadiopharmaceuticalStartDateTime = i_date + i_time
        rp.RadionuclideTotalDose = ds_text(dose_bq)
        rp.RadionuclideHalfLife = ds_text(tracer.half_life_s)
        rp.RadionuclidePositronFraction = tracer.positron_fraction
        code = Dataset()
        code.CodeValue, code.CodeMeaning = tracer.code
        code.CodingSchemeDesignator = "SRT"
        rp.RadionuclideCodeSequence = [code]
        ds.RadiopharmaceuticalInformationSequence = [rp]
        if vendor == "ge":
            block = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
            block.add_new(0x0D, "DT", scan_start.strftime("%Y%m%d%H%M%S.00"))
        if vendor == "philips":
            block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
            block.add_new(0x00, "DS", ds_text(suv_bw * bqml_factor))  # SUV scale factor
            block.add_new(0x09, "DS", ds_text(bqml_factor))  # activity concentration scale
        ds.PixelData = np.ascontiguousarray(stored.T).tobytes()
        out.append(ds)
    return out, bqml_out
