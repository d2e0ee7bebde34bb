"""Corpus layouts on disk: writers and readers (autoPET NIfTI, HDF5, ENHANCE.PET, flat).

Every layout reads through one shape (:mod:`petcorpus.layouts.base`): a :class:`Corpus`
iterates :class:`Case` objects, each with a ``key``, ``metadata`` and volumes by name;
:func:`open_corpus` picks the layout of a path.
"""

from petcorpus.layouts.base import LAYOUTS, Case, Corpus, corpus_class, open_corpus

__all__ = ["LAYOUTS", "Case", "Corpus", "corpus_class", "open_corpus"]
