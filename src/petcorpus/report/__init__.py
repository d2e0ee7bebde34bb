"""An offline HTML quality-control report of a corpus in the autoPET layout.

:func:`write_report` reads ``<out>/<subject>/<study>/{SUV,SEG,CTres,...}.nii.gz`` and each
study's ``petcorpus.json``; when ``<out>/catalog.sqlite`` exists it also reads subjects (sex,
age, diagnosis, site), scanner vendor and recorded failures from it, read-only. With a
metrics CSV (``petcorpus evaluate``) it adds the evaluation summary and per-case plots.

The result is one self-contained HTML file: every picture is an embedded PNG (``data:``
URI), there is no script from the network and no external stylesheet, so it opens offline
and can be mailed. The same corpus gives the same bytes (the build time is left out unless
asked for).

The work is split by concern: :mod:`~petcorpus.report.collect` gathers plain data (rows,
catalog facts, lesion numbers, failures), :mod:`~petcorpus.report.plots` draws PNGs,
:mod:`~petcorpus.report.render` fills the Jinja2 template ``templates/report.html.j2``
(autoescaped) and :mod:`~petcorpus.report.write` runs them and writes the file.
"""

from petcorpus.report.collect import (
    CatalogInfo,
    LesionSummary,
    StudyEntry,
    find_studies,
    lesion_summary,
    read_catalog,
    read_metrics,
)
from petcorpus.report.write import write_report

__all__ = [
    "CatalogInfo",
    "LesionSummary",
    "StudyEntry",
    "find_studies",
    "lesion_summary",
    "read_catalog",
    "read_metrics",
    "write_report",
]
