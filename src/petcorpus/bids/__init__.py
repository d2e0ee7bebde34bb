"""BIDS-PET export of a corpus (``petcorpus export-bids``; docs/bids.md).

The BIDS schema (the ``bidsschematools`` package, ``pip install 'petcorpus[bids]'``) decides
which sidecar fields are written (:mod:`petcorpus.bids.schema`); the values come from the
corpus's sidecars and catalog (:mod:`petcorpus.bids.sidecars`); :mod:`petcorpus.bids.export`
writes the tree.
"""

from petcorpus.bids.export import DERIVATIVE, BidsExport, export_bids

__all__ = ["DERIVATIVE", "BidsExport", "export_bids"]
