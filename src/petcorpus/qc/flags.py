"""What quality control finds: flags with stable reason codes, per study and per corpus."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

__all__ = ["CHECKS", "QcFlag", "QcReason", "QcReport", "StudyQc"]

#: The four checks, in the order they run and are shown.
CHECKS = ("alignment", "suv", "labels", "acquisition")


class QcReason(enum.StrEnum):
    """Machine-readable cause of a flag (stored in the catalog, counted by ``status``)."""

    MISALIGNED = "MISALIGNED"  # PET moved against CT (body outline)
    ORGAN_UPTAKE_OUTSIDE = "ORGAN_UPTAKE_OUTSIDE"  # hot organ's activity outside its CT mask
    SUV_IMPLAUSIBLE = "SUV_IMPLAUSIBLE"  # liver SUV outside the physiological range
    PERCIST_UNUSABLE = "PERCIST_UNUSABLE"  # reference region too spread or on a lesion
    NEGATIVE_WITH_LESIONS = "NEGATIVE_WITH_LESIONS"
    POSITIVE_WITHOUT_LESIONS = "POSITIVE_WITHOUT_LESIONS"
    MASK_OUTSIDE_BODY = "MASK_OUTSIDE_BODY"
    ONE_VOXEL_COMPONENT = "ONE_VOXEL_COMPONENT"
    MASK_OFF_GRID = "MASK_OFF_GRID"  # lesion mask on a grid other than the PET's
    ACQUISITION_OUTLIER = "ACQUISITION_OUTLIER"  # robust z against the corpus
    NOT_CORRECTED = "NOT_CORRECTED"  # attenuation or decay correction missing
    FOV_PARTIAL = "FOV_PARTIAL"  # the field of view ends in the chest (or starts there)
    UNREADABLE = "UNREADABLE"  # the study's volumes could not be read


@dataclasses.dataclass(frozen=True)
class QcFlag:
    """One finding: which check, why (a :class:`QcReason`), a sentence for people, the
    number behind it, and a picture showing it (PNG bytes, or None)."""

    check: str
    reason: QcReason
    message: str
    value: float | None = None
    picture: bytes | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass
class StudyQc:
    """Quality control of one study: its measures (name → number or text) and its flags.

    ``key`` is the corpus' case key (``"<subject>/<study>"`` in the autoPET layout);
    ``study_uid`` is set when the catalog knows the study.
    """

    key: str
    study_uid: str | None = None
    measures: dict[str, Any] = dataclasses.field(default_factory=dict)
    flags: list[QcFlag] = dataclasses.field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    def reasons(self) -> list[str]:
        """The reason codes of the flags, in order, without repeats."""
        return list(dict.fromkeys(str(f.reason) for f in self.flags))


@dataclasses.dataclass
class QcReport:
    """Quality control of a corpus: one :class:`StudyQc` per case, and notes on checks
    that could not run (e.g. too few studies for corpus statistics)."""

    studies: list[StudyQc]
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def flagged(self) -> list[StudyQc]:
        return [s for s in self.studies if s.flagged]

    def __getitem__(self, key: str) -> StudyQc:
        for s in self.studies:
            if s.key == key:
                return s
        raise KeyError(key)
