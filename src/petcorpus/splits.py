"""Patient-level, stratified, reproducible cross-validation splits (``petcorpus split``).

A subject is never in two folds, however many studies it has (about a tenth of autoPET's
patients were scanned more than once): the unit of the split is the subject, and each of
its studies goes where it goes. Subjects are stratified by the attributes asked for
(diagnosis, tracer, site; a subject whose studies differ gets the ``+``-joined values as
its own class), so every class is spread over the folds with counts that differ by at most
one; the test set (``test_fraction``) is drawn the same way first. The same seed gives the
same split on any machine (NumPy's PCG64), another seed another one.

The split is stored in the catalog and written as ``splits.json``::

    {"version": 1, "seed": 0, "n_folds": 5, "stratify": ["diagnosis"],
     "test_fraction": 0.0, "test": ["PETCT_..."], "folds": [["PETCT_...", ...], ...],
     "studies": {"PETCT_...": ["PETCT_.../<study>"]}}

``folds[k]`` is fold ``k``'s validation subjects; its training set is the other folds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petcorpus.errors import PetcorpusError, Reason

__all__ = ["SPLITS_NAME", "STRATIFY_KEYS", "Split", "make_split", "read_split", "split_corpus"]

SPLITS_NAME = "splits.json"
#: Subject attributes a split can be stratified by (columns of
#: :meth:`petcorpus.catalog.Catalog.subject_attributes`).
STRATIFY_KEYS = ("diagnosis", "tracer", "site")
_UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class Split:
    """Subjects per fold and in the test set, and how they were drawn."""

    folds: tuple[tuple[str, ...], ...]
    test: tuple[str, ...]
    seed: int
    stratify: tuple[str, ...]
    test_fraction: float

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def fold_of(self) -> dict[str, int | None]:
        """Subject → fold (``None`` for the test set)."""
        out: dict[str, int | None] = dict.fromkeys(self.test)
        for k, fold in enumerate(self.folds):
            out.update(dict.fromkeys(fold, k))
        return out

    def train(self, fold: int) -> tuple[str, ...]:
        """The training subjects of ``fold`` (every other fold)."""
        return tuple(sorted(s for k, f in enumerate(self.folds) if k != fold for s in f))

    def as_json(self, studies: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        return {
            "version": 1,
            "seed": self.seed,
            "n_folds": self.n_folds,
            "stratify": list(self.stratify),
            "test_fraction": self.test_fraction,
            "test": list(self.test),
            "folds": [list(f) for f in self.folds],
            "studies": {k: list(v) for k, v in sorted((studies or {}).items())},
        }


def make_split(
    classes: Mapping[str, str],
    *,
    folds: int = 5,
    seed: int = 0,
    test_fraction: float = 0.0,
    stratify: Sequence[str] = (),
) -> Split:
    """Split subjects into ``folds`` folds (and a test set), stratified by class.

    Parameters
    ----------
    classes : mapping
        Subject id → its class (the stratification key; one class for all: no strata).
    folds : int
        Number of cross-validation folds (≥ 2).
    seed : int
        Seed of the shuffle (NumPy PCG64): the same seed, the same split.
    test_fraction : float
        Share of each class held out as the test set first (rounded per class), 0 ≤ f < 1.
    stratify : sequence of str
        What ``classes`` was built from (recorded with the split).

    Returns
    -------
    Split
        Each class's subjects dealt round-robin over the folds, starting at the fold that
        is smallest so far: per class, fold counts differ by at most one, and fold sizes
        by at most the number of classes.
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = {}
    for subject, cls in sorted(classes.items()):
        by_class.setdefault(cls, []).append(subject)
    test: list[str] = []
    buckets: list[list[str]] = [[] for _ in range(folds)]
    for cls in sorted(by_class):
        members = [by_class[cls][i] for i in rng.permutation(len(by_class[cls]))]
        n_test = math.floor(len(members) * test_fraction + 0.5) if test_fraction else 0
        test.extend(members[:n_test])
        start = min(range(folds), key=lambda k: (len(buckets[k]), k))
        for i, subject in enumerate(members[n_test:]):
            buckets[(start + i) % folds].append(subject)
    if sum(map(len, buckets)) < folds:
        raise PetcorpusError(
            f"{len(classes)} subjects cannot fill {folds} folds"
            + (f" after a test set of {len(test)}" if test else ""),
            reason=Reason.INVALID_VALUE,
        )
    return Split(
        folds=tuple(tuple(sorted(b)) for b in buckets),
        test=tuple(sorted(test)),
        seed=seed,
        stratify=tuple(stratify),
        test_fraction=test_fraction,
    )


def split_corpus(
    out: str | os.PathLike[str],
    *,
    folds: int = 5,
    stratify: Sequence[str] = ("diagnosis",),
    seed: int = 0,
    test_fraction: float = 0.0,
) -> tuple[Split, Path]:
    """Split the subjects of the corpus ``out``; store it in its catalog and ``splits.json``.

    Subjects are those with at least one study in the catalog; a missing attribute counts
    as its own class (``unknown``).

    Returns
    -------
    (Split, path of splits.json)
    """
    from petcorpus.atomic import atomic_write
    from petcorpus.catalog import Catalog

    unknown = [k for k in stratify if k not in STRATIFY_KEYS]
    if unknown:
        raise ValueError(
            f"cannot stratify by {', '.join(unknown)}: choose from {', '.join(STRATIFY_KEYS)}"
        )
    out = Path(out)
    with Catalog.open(out, create=False) as catalog:
        table = catalog.subject_attributes()
        if table.empty:
            raise PetcorpusError(
                "the catalog has no subjects to split", path=catalog.path, reason=Reason.NO_SERIES
            )
        classes = {
            str(row["subject_id"]): "|".join(
                str(row[k]) if row[k] is not None and row[k] == row[k] else _UNKNOWN
                for k in stratify
            )
            for _, row in table.iterrows()
        }
        split = make_split(
            classes, folds=folds, seed=seed, test_fraction=test_fraction, stratify=stratify
        )
        catalog.record_splits(split.fold_of())
        rows = catalog.splits()
    studies: dict[str, list[str]] = {}
    for subject, source in zip(rows["subject_id"], rows["source"], strict=True):
        if source is not None:
            studies.setdefault(str(subject), []).append(str(source))
    path = out / SPLITS_NAME
    with atomic_write(path) as fh:
        fh.write(json.dumps(split.as_json(studies), indent=2).encode() + b"\n")
    return split, path


def read_split(path: str | os.PathLike[str]) -> Split:
    """Read a ``splits.json`` back (``path`` is the file or the corpus folder holding it).

    Raises
    ------
    PetcorpusError
        No such file (reason ``NO_SERIES``: run ``petcorpus split`` first), or it is not a
        split this version wrote (``CorruptFileError``).
    """
    from petcorpus.errors import CorruptFileError

    path = Path(path)
    if path.is_dir():
        path = path / SPLITS_NAME
    if not path.is_file():
        raise PetcorpusError(
            "no split: run `petcorpus split` on the corpus first", path=path,
            reason=Reason.NO_SERIES,
        )  # fmt: skip
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != 1:
            raise ValueError(f"unknown version {data.get('version')!r}")
        return Split(
            folds=tuple(tuple(str(s) for s in fold) for fold in data["folds"]),
            test=tuple(str(s) for s in data["test"]),
            seed=int(data["seed"]),
            stratify=tuple(data["stratify"]),
            test_fraction=float(data["test_fraction"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"not a petcorpus split: {exc}", path=path) from exc
