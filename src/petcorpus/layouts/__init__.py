"""Corpus layouts on disk: writers and readers (autoPET NIfTI, HDF5, nnU-Net, ENHANCE.PET)."""
