"""Numbers from segmentations: the autoPET metrics, overlap and surface metrics, lesion
statistics. Pure functions over numpy arrays (+ spacing or a :class:`~petcorpus.Volume`)."""

from petcorpus.metrics.autopet import (
    EDITIONS,
    AutopetMetrics,
    Edition,
    aggregate_autopet,
    autopet_metrics,
    voxel_volume_source,
)
from petcorpus.metrics.lesions import (
    PEAK_RADIUS_MM,
    LesionStats,
    StudyLesionSummary,
    lesion_statistics,
    study_summary,
)
from petcorpus.metrics.overlap import OverlapMetrics, confusion_counts, overlap_metrics
from petcorpus.metrics.surface import (
    SurfaceMetrics,
    border_voxels,
    surface_distances,
    surface_metrics,
)

__all__ = [
    "EDITIONS",
    "PEAK_RADIUS_MM",
    "AutopetMetrics",
    "Edition",
    "LesionStats",
    "OverlapMetrics",
    "StudyLesionSummary",
    "SurfaceMetrics",
    "aggregate_autopet",
    "autopet_metrics",
    "border_voxels",
    "confusion_counts",
    "lesion_statistics",
    "overlap_metrics",
    "study_summary",
    "surface_distances",
    "surface_metrics",
    "voxel_volume_source",
]
