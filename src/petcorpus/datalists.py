"""Training lists from a corpus and its split: MONAI (Auto3DSeg) datalists and TorchIO subjects.

The MONAI datalist follows the Medical Segmentation Decathlon / Auto3DSeg convention that
``monai.data.load_decathlon_datalist`` reads::

    {"training": [{"image": "<subject>/<study>/CTres.nii.gz",
                   "image2": "<subject>/<study>/SUV.nii.gz",
                   "label": "<subject>/<study>/SEG.nii.gz", "fold": 0}, ...],
     "testing": [{"image": ..., "image2": ...}, ...]}

``fold`` is the subject's fold in ``splits.json`` (:mod:`petcorpus.splits`): every study of
a subject carries the same fold, and the test subjects are in ``testing`` only. Paths are
relative to the corpus folder (Auto3DSeg's ``dataroot``; MONAI resolves them against the
datalist's folder when ``base_dir`` is not given, so a datalist inside the corpus folder
works either way). The channels are the CT on the PET grid (``CTres``, the main image,
Auto3DSeg ``modality: CT``) and the SUV (``image2``, ``extra_modalities: {image2: pet}``),
the way the HECKTOR22 Auto3DSeg solution feeds PET/CT.

The same selection of cases (a fold's training or validation part, the test set) feeds
:func:`torchio_subjects` and :class:`petcorpus.torch.PatchDataset`: :func:`select_cases`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from petcorpus.errors import PetcorpusError, Reason, UnsupportedError
from petcorpus.layouts.base import Case, Corpus, open_corpus
from petcorpus.splits import Split, read_split

if TYPE_CHECKING:
    import torchio

__all__ = [
    "DATALIST_NAME",
    "INPUT_YAML_NAME",
    "Part",
    "auto3dseg_input_yaml",
    "monai_datalist",
    "select_cases",
    "torchio_subjects",
    "write_datalist",
]

logger = logging.getLogger(__name__)

DATALIST_NAME = "datalist.json"
INPUT_YAML_NAME = "input.yaml"
#: Which cases: a fold's training part (every other fold; all non-test subjects without a
#: fold), its validation part (the fold itself), the test set, or everything.
Part = Literal["train", "val", "test", "all"]
_PARTS = ("train", "val", "test", "all")


def _subject(case: Case) -> str:
    """The subject of a ``<subject>/<study>`` key (the whole key for other layouts)."""
    return case.key.split("/", 1)[0]


def select_cases(
    corpus: Corpus,
    split: Split | None,
    *,
    fold: int | None = None,
    part: Part = "train",
) -> list[tuple[Case, int | None]]:
    """The cases of one part of a split, each with its subject's fold (None: test set).

    Parameters
    ----------
    corpus : Corpus
    split : Split or None
        None only with ``part="all"`` (every case, fold None).
    fold : int, optional
        The cross-validation fold; without it ``"train"`` is every non-test case.
    part : {"train", "val", "test", "all"}
        ``"train"``: the subjects of every fold but ``fold``; ``"val"``: fold ``fold``'s
        (``fold`` required); ``"test"``: the test set; ``"all"``: every case.

    Raises
    ------
    PetcorpusError
        A case's subject is not in the split (the corpus changed since ``petcorpus split``),
        or ``fold`` is out of range.
    """
    if part not in _PARTS:
        raise ValueError(f"part must be one of {', '.join(_PARTS)}, got {part!r}")
    cases = list(corpus.cases())
    if split is None:
        if part != "all":
            raise ValueError(f"part={part!r} needs a split (run `petcorpus split` first)")
        return [(c, None) for c in cases]
    if fold is not None and not 0 <= fold < split.n_folds:
        raise PetcorpusError(
            f"fold {fold} does not exist: the split has folds 0-{split.n_folds - 1}",
            reason=Reason.INVALID_VALUE,
        )
    if part == "val" and fold is None:
        raise ValueError("part='val' needs a fold")
    fold_of = split.fold_of()
    out: list[tuple[Case, int | None]] = []
    missing: list[str] = []
    for case in cases:
        subject = _subject(case)
        if subject not in fold_of:
            missing.append(case.key)
            continue
        k = fold_of[subject]
        keep = (
            part == "all"
            or (part == "test" and k is None)
            or (part == "val" and k is not None and k == fold)
            or (part == "train" and k is not None and k != fold)
        )
        if keep:
            out.append((case, k))
    if missing:
        raise PetcorpusError(
            f"{len(missing)} case(s) whose subject is not in the split, e.g. {missing[0]}: "
            "run `petcorpus split` again",
            path=corpus.root,
            reason=Reason.INVALID_VALUE,
        )
    return out


def _file(case: Case, name: str) -> Path:
    """The NIfTI file holding ``name`` (folder layouts only)."""
    path = getattr(case, "path", None)
    if not callable(path):
        raise UnsupportedError(
            f"case {case.key}: a datalist lists NIfTI files, and this layout has none; "
            "use the corpus folder (autoPET layout)"
        )
    p = Path(path(name))
    if not p.is_file():
        raise PetcorpusError(f"case {case.key} has no {name}", path=p, reason=Reason.NO_SERIES)
    return p


def monai_datalist(
    corpus: Corpus | str | os.PathLike[str],
    split: Split | None = None,
    *,
    image: str = "CTres",
    image2: str = "SUV",
    label: str = "SEG",
    absolute: bool = False,
) -> dict[str, Any]:
    """A MONAI / Auto3DSeg datalist of the corpus: ``training`` with folds, ``testing``.

    Parameters
    ----------
    corpus : Corpus or path
        A corpus in the autoPET layout (NIfTI files), or its folder.
    split : Split, optional
        Default: the corpus's ``splits.json`` (:func:`petcorpus.splits.read_split`).
    image, image2, label : str
        Volume names of the main image, the second channel and the lesion mask.
    absolute : bool
        Absolute paths instead of paths relative to the corpus folder.

    Returns
    -------
    dict
        ``{"name", "description", "labels", "modality", "numTraining", "numTest",
        "training": [{"image", "image2", "label", "fold"}], "testing": [{"image",
        "image2"}]}``, cases sorted by key (a case's folder is its files' folder).

    Raises
    ------
    PetcorpusError
        No split, a case outside the split, or a missing file (the first one named).
    """
    if not isinstance(corpus, Corpus):
        with open_corpus(corpus) as opened:
            return monai_datalist(
                opened, split, image=image, image2=image2, label=label, absolute=absolute
            )
    split = split if split is not None else read_split(corpus.root)
    root = corpus.root.resolve()

    def rel(p: Path) -> str:
        p = p.resolve()
        return str(p) if absolute else p.relative_to(root).as_posix()

    training: list[dict[str, Any]] = []
    testing: list[dict[str, Any]] = []
    for case, fold in select_cases(corpus, split, part="all"):
        item: dict[str, Any] = {
            "image": rel(_file(case, image)),
            "image2": rel(_file(case, image2)),
        }
        if fold is None:
            testing.append(item)
        else:
            training.append({**item, "label": rel(_file(case, label)), "fold": fold})
    return {
        "name": "petcorpus",
        "description": f"{root.name}: {split.n_folds} folds (seed {split.seed}), "
        f"{len(testing)} test case(s)",
        "labels": {"0": "background", "1": "lesion"},
        "modality": {"0": image, "1": image2},
        "numTraining": len(training),
        "numTest": len(testing),
        "training": training,
        "testing": testing,
    }


def auto3dseg_input_yaml(
    datalist: str | os.PathLike[str], dataroot: str | os.PathLike[str]
) -> str:
    """The text of an Auto3DSeg ``input.yaml`` for a petcorpus datalist (CT main image,
    PET as ``image2``, one lesion class)."""

    def quoted(p: str | os.PathLike[str]) -> str:
        return json.dumps(str(p))  # a JSON string is a YAML flow scalar

    return (
        "# Auto3DSeg input written by petcorpus; run e.g.\n"
        "#   python -m monai.apps.auto3dseg AutoRunner run --input=input.yaml\n"
        "modality: CT\n"
        "extra_modalities: {image2: pet}\n"
        "class_names: [lesion]\n"
        f"datalist: {quoted(datalist)}\n"
        f"dataroot: {quoted(dataroot)}\n"
    )


def write_datalist(
    corpus: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    split: Split | None = None,
    input_yaml: bool = True,
    absolute: bool = False,
) -> tuple[Path, Path | None]:
    """Write the corpus's MONAI datalist (and an Auto3DSeg ``input.yaml`` beside it).

    Parameters
    ----------
    corpus : path
        The corpus folder (autoPET layout, with ``splits.json``).
    out : path, optional
        The datalist file; default ``<corpus>/datalist.json``. ``input.yaml`` goes to its
        folder.
    split : Split, optional
        Default: the corpus's ``splits.json``.
    input_yaml : bool
        Also write ``input.yaml`` (``datalist`` and ``dataroot`` as absolute paths).
    absolute : bool
        Absolute file paths in the datalist.

    Returns
    -------
    (datalist path, input.yaml path or None)
    """
    from petcorpus.atomic import atomic_write

    root = Path(corpus)
    data = monai_datalist(root, split, absolute=absolute)
    path = Path(out) if out is not None else root / DATALIST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        fh.write(json.dumps(data, indent=2).encode() + b"\n")
    yaml_path = None
    if input_yaml:
        yaml_path = path.parent / INPUT_YAML_NAME
        text = auto3dseg_input_yaml(path.resolve(), root.resolve())
        with atomic_write(yaml_path) as fh:
            fh.write(text.encode())
    return path, yaml_path


def torchio_subjects(
    corpus: Corpus | str | os.PathLike[str],
    fold: int | None = None,
    split: Part = "train",
    *,
    splits: Split | None = None,
    images: Sequence[tuple[str, str]] = (("ct", "CTres"), ("suv", "SUV")),
    label: str | None = "SEG",
    transform: Any = None,
) -> torchio.SubjectsDataset:
    """A TorchIO ``SubjectsDataset`` of one part of the split.

    Each ``tio.Subject`` holds ``ct`` and ``suv`` as ``ScalarImage`` and ``label`` as
    ``LabelMap``, plus ``case`` (the key), ``subject`` and ``fold``. Folder layouts give
    file paths (TorchIO loads them lazily); other layouts (HDF5) are read into tensors.

    Parameters
    ----------
    corpus : Corpus or path
    fold : int, optional
        See :func:`select_cases`.
    split : {"train", "val", "test", "all"}
        Which part (``"val"`` needs ``fold``).
    splits : Split, optional
        Default: the corpus's ``splits.json``.
    images : sequence of (key, volume name)
        The scalar images.
    label : str or None
        The label volume (None: no label, e.g. for the test set).
    transform : torchio transform, optional

    Raises
    ------
    MissingDependencyError
        TorchIO is not installed (``pip install 'petcorpus[torchio]'``).
    """
    from petcorpus._optional import import_optional

    tio = import_optional("torchio", extra="torchio", purpose="torchio_subjects")
    if not isinstance(corpus, Corpus):
        corpus = open_corpus(corpus)
    splits = splits if splits is not None else read_split(_split_root(corpus))
    subjects = []
    for case, k in select_cases(corpus, splits, fold=fold, part=split):
        fields: dict[str, Any] = {"case": case.key, "subject": _subject(case), "fold": k}
        pairs = [(key, name, tio.ScalarImage) for key, name in images]
        if label is not None:
            pairs.append(("label", label, tio.LabelMap))
        for key, name, kind in pairs:
            if callable(getattr(case, "path", None)):
                fields[key] = kind(_file(case, name))
            else:
                vol = case.volume(name)
                fields[key] = kind(tensor=vol.array[None], affine=vol.affine)
        subjects.append(tio.Subject(**fields))
    return tio.SubjectsDataset(subjects, transform=transform)


def _split_root(corpus: Corpus) -> Path:
    """Where a corpus's ``splits.json`` is: its folder, or the folder of its HDF5 file."""
    return corpus.root if corpus.root.is_dir() else corpus.root.parent
