import pytest
from typer.testing import CliRunner

from petcorpus.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("demo", "phantom", "version"):
        assert name in result.output


@pytest.mark.slow
def test_phantom_command_writes_tree(tmp_path):
    result = runner.invoke(app, ["phantom", str(tmp_path), "--subjects", "2", "--vendor", "ge"])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("PETCT_*/*/*/*.dcm"))) == 2 * (80 + 80 + 1)
    assert (tmp_path / "Clinical Metadata FDG PET_CT Lesions.csv").is_file()


def test_phantom_rejects_unknown_vendor(tmp_path):
    result = runner.invoke(app, ["phantom", str(tmp_path), "--vendor", "acme"])
    assert result.exit_code == 2
    assert "vendor" in result.output


@pytest.mark.slow
def test_demo_runs(tmp_path):
    result = runner.invoke(app, ["demo", str(tmp_path / "demo"), "--subjects", "2"])
    assert result.exit_code == 0, result.output
    assert "demo done" in result.output
