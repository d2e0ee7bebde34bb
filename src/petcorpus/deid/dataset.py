"""De-identify one DICOM dataset: PS3.15's Basic Profile with the options a PET corpus needs.

The profile (:mod:`petcorpus.deid.profile`, the standard's Table E.1-1) is applied to every
element, in the main dataset and in every sequence item:

- Basic Application Level Confidentiality Profile (113100), with
- Retain Patient Characteristics (113108): sex, age, weight, size stay (SUV needs weight);
- Retain Longitudinal Temporal Information with Modified Dates (113107): every DA and DT of
  the patient moves by one whole number of days (:mod:`petcorpus.deid.dates`), times of day
  stay, so injection-to-scan intervals are exact; (0028,0303) becomes ``MODIFIED``;
- Clean Descriptors (113105): descriptions are kept, with every identifying value of the
  file's own header (names and their components, IDs, accession number, birth date,
  institution, physicians: :func:`petcorpus.deid.phi.identifiers_of`) cut out of them. The
  same cleaning is applied to every other text element that the table keeps (a segment
  label, a manufacturer's model name...), since PS3.15 leaves the rest to the de-identifier.

Choices where the table leaves one: ``X/Z``, ``X/D``, ``X/Z/D``, ``Z/D`` take the IOD's type
of the attribute at its place (highdicom's tables of the standard's modules): Type 1 gets a
dummy, Type 2 an empty value, Type 3 is removed. ``X/Z/U*`` keeps a sequence the IOD requires
(a SEG's source images) with its UIDs replaced, else removes it. Every ``U`` attribute gets
:func:`petcorpus.deid.uids.new_uid`. Private attributes are removed except the SUV inputs in
:data:`PRIVATE_KEEP`. PatientName and PatientID become the new ID.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from petcorpus.deid.dates import shift_da, shift_dt
from petcorpus.deid.profile import Action, action_for
from petcorpus.deid.uids import new_uid
from petcorpus.dicom.values import (
    GE_SCAN_DATETIME,
    PHILIPS_BQML_SCALE,
    PHILIPS_SUV_SCALE,
    PrivateTag,
)

__all__ = ["METHOD_CODES", "PRIVATE_KEEP", "DeidContext", "deidentify_dataset", "replacement"]

#: Private elements kept (everything else private is removed): the SUV inputs petcorpus reads
#: (:mod:`petcorpus.dicom.values`). Siemens writes BQML with standard timing: nothing private.
PRIVATE_KEEP: tuple[PrivateTag, ...] = (GE_SCAN_DATETIME, PHILIPS_SUV_SCALE, PHILIPS_BQML_SCALE)

#: CID 7050 codes of the profile and options applied (pydicom's code dictionary)
METHOD_CODES = (
    codes.DCM.BasicApplicationConfidentialityProfile,
    codes.DCM.RetainPatientCharacteristicsOption,
    codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption,
    codes.DCM.CleanDescriptorsOption,
)
#: what replaces an identifier cut out of a text
REMOVED = "X"
_DUMMY_TEXT = "ANONYMIZED"
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_IMPLEMENTATION_VERSION = "PETCORPUS_DEID"


@dataclasses.dataclass(frozen=True)
class DeidContext:
    """What the transformation of one file needs."""

    key: bytes
    #: whole days added to every date of this file's patient
    shift_days: int
    #: the new PatientID (also the new PatientName)
    new_patient_id: str
    #: removes the file's identifying values from a text
    clean: Callable[[str], str]


# -- the IOD's type of an attribute (highdicom ships the standard's module tables) ------------
@functools.cache
def _iod_types(sop_class: str) -> dict[tuple[str, ...], str]:
    """(sequence keywords..., keyword) → the strictest type of the attribute in the IOD."""
    try:
        from highdicom._standard_utils import (
            get_iod_module_map,
            get_module_attribute_map,
            get_sop_class_iod_map,
        )

        iod = get_sop_class_iod_map().get(sop_class)
        modules = get_iod_module_map().get(iod, []) if iod else []
        attrs = get_module_attribute_map()
    except Exception:  # another highdicom: every choice falls back to removal
        return {}
    rank = {"1": 0, "1C": 1, "2": 2, "2C": 3, "3": 4}
    out: dict[tuple[str, ...], str] = {}
    for module in modules:
        for a in attrs.get(module["key"], []):
            k = (*a["path"], a["keyword"])
            if k not in out or rank.get(a["type"], 4) < rank.get(out[k], 4):
                out[k] = a["type"]
    return out


def _resolve(action: Action, sop_class: str, path: tuple[str, ...], keyword: str) -> Action:
    if action not in (Action.X_Z, Action.X_D, Action.X_Z_D, Action.Z_D, Action.X_Z_U):
        return action
    kind = _iod_types(sop_class).get((*path, keyword), "3")
    required = kind in ("1", "1C")
    empty_ok = kind in ("2", "2C")
    if action is Action.X_Z_U:
        return Action.K if required or empty_ok else Action.X  # K: its UIDs are replaced
    if action is Action.Z_D:
        return Action.D if required else Action.Z
    if required and action in (Action.X_D, Action.X_Z_D):
        return Action.D
    if (required or empty_ok) and action in (Action.X_Z, Action.X_Z_D):
        return Action.Z
    return Action.X


# -- values --------------------------------------------------------------------------------
def replacement(vr: str, ctx: DeidContext) -> Any:
    """A dummy value of a VR (action D)."""
    if vr == "SQ":
        return Sequence()
    if vr == "DA":
        return "19000101"
    if vr == "TM":
        return "000000"
    if vr == "DT":
        return "19000101000000"
    if vr in ("DS", "IS"):
        return "0"
    if vr == "AS":
        return "000Y"
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        return 0
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return b""
    return _DUMMY_TEXT


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def _shift(elem: DataElement, days: int) -> None:
    shift = shift_da if elem.VR == "DA" else shift_dt
    values = elem.value
    if values is None or values == "":
        return
    raw = isinstance(values, bytes)
    items = [values] if raw or isinstance(values, str) else list(values)
    shifted = [shift(_text(v), days) for v in items]
    if raw:
        elem.value = "\\".join(shifted).encode("ascii")
    else:
        elem.value = shifted[0] if len(shifted) == 1 else shifted


def _clean_text(elem: DataElement, ctx: DeidContext) -> None:
    value = elem.value
    if value is None or value == "":
        return
    if isinstance(value, bytes):
        return
    if isinstance(value, str) or not isinstance(value, Iterable):
        cleaned = ctx.clean(str(value))
        if cleaned != str(value):
            elem.value = cleaned
        return
    items = [str(v) for v in value]
    cleaned_items = [ctx.clean(v) for v in items]
    if cleaned_items != items:
        elem.value = cleaned_items


def _remap_uid(elem: DataElement, ctx: DeidContext) -> None:
    value = elem.value
    if value is None or value == "":
        return
    if isinstance(value, str):
        elem.value = new_uid(ctx.key, value)
    else:
        elem.value = [new_uid(ctx.key, str(v)) for v in value]


# -- private elements ----------------------------------------------------------------------
def _private_kept(ds: Dataset) -> set[BaseTag]:
    """Tags of the whitelisted private elements present in ``ds`` and of their creators."""
    keep: set[BaseTag] = set()
    for p in PRIVATE_KEEP:
        for slot in range(0x10, 0x100):
            creator: DataElement | None = ds.get(Tag(p.group, slot))
            if creator is None:
                continue
            name = _text(creator.value).strip("\0 ")
            if name != p.creator:
                continue
            tag = Tag(p.group, (slot << 8) | p.offset)
            if tag in ds:
                keep.update((Tag(p.group, slot), tag))
    return keep


# -- the walk ------------------------------------------------------------------------------
def _walk(ds: Dataset, ctx: DeidContext, sop_class: str, path: tuple[str, ...]) -> None:
    keep_private = _private_kept(ds) if not path else set()
    for elem in list(ds):
        tag = elem.tag
        if tag.is_private:
            if tag not in keep_private:
                del ds[tag]
            elif elem.VR in ("DA", "DT"):
                _shift(elem, ctx.shift_days)
            continue
        action = action_for(int(tag))
        keyword = elem.keyword
        if action is not None:
            action = _resolve(action, sop_class, path, keyword)
        if tag == 0x00100010 or tag == 0x00100020:  # PatientName, PatientID: the new ID
            elem.value = ctx.new_patient_id
            continue
        if action is Action.X:
            del ds[tag]
            continue
        if action is Action.Z:
            elem.value = Sequence() if elem.VR == "SQ" else None
            continue
        if action is Action.D:
            elem.value = replacement(elem.VR, ctx)
            continue
        if action is Action.U:
            _remap_uid(elem, ctx)
            continue
        # K, C or not listed: kept, sequences recursed, dates shifted, texts cleaned
        if elem.VR == "SQ":
            for item in elem.value or []:
                _walk(item, ctx, sop_class, (*path, keyword))
        elif elem.VR in ("DA", "DT"):
            _shift(elem, ctx.shift_days)
        elif elem.VR in _TEXT_VRS:
            _clean_text(elem, ctx)


def deidentify_dataset(ds: Dataset, ctx: DeidContext) -> Dataset:
    """De-identify ``ds`` in place (see the module docstring) and return it.

    The File Meta Information is rebuilt (PS3.15 E.1.1 item 7: it names petcorpus and the new
    SOP Instance UID) and the preamble zeroed.
    """
    sop_class = str(ds.get("SOPClassUID", ""))
    old_meta = getattr(ds, "file_meta", None)
    _walk(ds, ctx, sop_class, ())
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = [c.meaning for c in METHOD_CODES]
    items = []
    for code in METHOD_CODES:
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme_designator
        item.CodeMeaning = code.meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID", "")))
    syntax = old_meta.get("TransferSyntaxUID") if old_meta is not None else None
    if syntax:
        meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    return ds
