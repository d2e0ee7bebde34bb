"""Batch work over a corpus: plan, run on the driver / local processes / Dask, record.

- :mod:`~petcorpus.pipeline.plan`: scan a tree, name each study's folder, one task per study;
- :mod:`~petcorpus.pipeline.tasks`: the per-study task the workers run;
- :mod:`~petcorpus.pipeline.executors`: where tasks run (:class:`Runner`);
- :mod:`~petcorpus.pipeline.build`: the driver that records outcomes in the catalog;
- :mod:`~petcorpus.pipeline.enhance`: catalogue an ENHANCE.PET corpus in place;
- :mod:`~petcorpus.pipeline.release`: import an autoPET challenge release (nnU-Net format),
  and export a corpus as an nnU-Net v2 dataset.
"""

from petcorpus.pipeline.build import BuildReport, build
from petcorpus.pipeline.enhance import ImportReport, import_enhance
from petcorpus.pipeline.executors import Runner
from petcorpus.pipeline.plan import BuildPlan, plan_build, plan_tasks, skipped_summary
from petcorpus.pipeline.release import (
    NnunetExport,
    ReleaseImportReport,
    export_nnunet,
    import_release,
)
from petcorpus.pipeline.tasks import (
    STUDY_KINDS,
    WORKER_MODULES,
    StudyOutcome,
    StudyTask,
    run_study,
)

__all__ = [
    "STUDY_KINDS",
    "WORKER_MODULES",
    "BuildPlan",
    "BuildReport",
    "ImportReport",
    "NnunetExport",
    "ReleaseImportReport",
    "Runner",
    "StudyOutcome",
    "StudyTask",
    "build",
    "export_nnunet",
    "import_enhance",
    "import_release",
    "plan_build",
    "plan_tasks",
    "run_study",
    "skipped_summary",
]
