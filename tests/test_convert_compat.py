"""`petcorpus convert --compat autopet` end to end equals the published recipe's files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from petcorpus.cli import app
from tests.test_compat_autopet import recipe_run  # noqa: F401 - fixture (skips without peers)

runner = CliRunner()


@pytest.mark.slow
def test_convert_compat_equals_recipe(recipe_run, tmp_path):  # noqa: F811
    _study, study_dir, _dirs, files, _ct, _pet = recipe_run
    result = runner.invoke(
        app,
        [
            "convert",
            str(study_dir),
            str(tmp_path / "out"),
            "--compat",
            "autopet",
            "--compat-flavor",
            "current",
        ],
    )
    assert result.exit_code == 0, result.output
    (ours_dir,) = {p.parent for p in (tmp_path / "out").rglob("SUV.nii.gz")}
    for name in ("CT", "PET", "SUV"):
        ref, ours = nib.load(files[name]), nib.load(ours_dir / f"{name}.nii.gz")
        assert ours.get_data_dtype() == ref.get_data_dtype(), name
        np.testing.assert_array_equal(ours.affine, ref.affine)
        np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(ref.dataobj))
    ref, ours = nib.load(files["CTres"]), nib.load(ours_dir / "CTres.nii.gz")
    np.testing.assert_array_equal(ours.affine, ref.affine)
    assert float(np.abs(ours.get_fdata() - ref.get_fdata()).max()) < 1e-3
