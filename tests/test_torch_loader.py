"""The PyTorch patch loader (petcorpus.torch): shapes, voxels, foreground share, workers, seeds."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="petcorpus.torch needs torch (pip install 'petcorpus[torch]')")
import torch

from petcorpus.layouts.autopet import AutopetCorpus, AutopetStudy, write_autopet_study
from petcorpus.layouts.hdf5 import H5Options, H5Study, write_hdf5
from petcorpus.resample import resample_to
from petcorpus.splits import SPLITS_NAME, make_split
from petcorpus.torch import PatchDataset
from tests.conftest import phantom

PATCH = (32, 32, 32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Two small lesion-bearing phantom studies as NIfTI folders, a contiguous and a
    chunked HDF5 file, and a 2-fold split; returns the sources by layout name."""
    root = tmp_path_factory.mktemp("loader") / "corpus"
    for seed, diagnosis in ((21, "LYMPHOMA"), (22, "MELANOMA")):
        st = phantom(seed=seed, size="small", vendor="siemens", diagnosis=diagnosis)
        t = st.truth
        ctres = resample_to(t.ct_hu, t.pet_bqml, fill=-1024, dtype=np.float32)
        study = AutopetStudy(t.ct_hu, t.pet_bqml, t.suv, ctres, t.lesion_mask)
        write_autopet_study(root / st.subject_id / st.study_folder, study, workers=1)
    studies = [H5Study.from_case(c) for c in AutopetCorpus(root).cases()]
    write_hdf5(root / "contiguous.h5", studies, H5Options(contiguous=True))
    write_hdf5(root / "chunked.h5", studies, H5Options())
    subjects = sorted(s.subject for s in studies)
    split = make_split(dict.fromkeys(subjects, "x"), folds=2, seed=0)
    (root / SPLITS_NAME).write_text(json.dumps(split.as_json()))
    return {
        "hdf5-contiguous": root / "contiguous.h5",
        "hdf5-chunked": root / "chunked.h5",
        "nifti": root,
    }


@pytest.fixture(scope="module")
def volumes(corpus) -> dict[str, dict[str, np.ndarray]]:
    """Case key → volume name → the whole array, read from the NIfTI files."""
    return {
        c.key: {n: np.asarray(c.volume(n).array) for n in ("CTres", "SUV", "SEG")}
        for c in AutopetCorpus(corpus["nifti"]).cases()
    }


def _expected(vol: np.ndarray, origin, size, pad: float) -> np.ndarray:
    out = np.full(size, pad, dtype=np.float64)
    src = tuple(
        slice(max(o, 0), min(o + s, n)) for o, s, n in zip(origin, size, vol.shape, strict=True)
    )
    dst = tuple(slice(a.start - o, a.stop - o) for a, o in zip(src, origin, strict=True))
    out[dst] = vol[src]
    return out


@pytest.mark.parametrize("layout", ["hdf5-contiguous", "hdf5-chunked", "nifti"])
def test_patches_have_the_shape_and_the_voxels_of_the_source(corpus, volumes, layout):
    ds = PatchDataset(corpus[layout], patch_size=PATCH, length=8, oversample_foreground=0.5)
    assert len(ds) == 8
    for i in range(len(ds)):
        item = ds[i]
        meta = item["meta"]
        assert item["ct"].shape == item["suv"].shape == item["label"].shape == (1, *PATCH)
        assert item["ct"].dtype == item["suv"].dtype == torch.float32
        assert item["label"].dtype == torch.uint8
        origin = meta["origin"].tolist()
        vols = volumes[meta["case"]]
        assert meta["shape"].tolist() == list(vols["SUV"].shape)
        o = [slice(a, a + s) for a, s in zip(origin, PATCH, strict=True)]
        assert all(a >= 0 for a in origin)  # the phantom is larger than 32³
        np.testing.assert_array_equal(item["ct"][0].numpy(), vols["CTres"][tuple(o)])
        np.testing.assert_array_equal(item["suv"][0].numpy(), vols["SUV"][tuple(o)])
        np.testing.assert_array_equal(item["label"][0].numpy(), vols["SEG"][tuple(o)])


def test_a_volume_smaller_than_the_patch_is_padded(corpus, volumes):
    size = (24, 24, 96)  # the small phantom has 80 slices
    ds = PatchDataset(corpus["hdf5-contiguous"], patch_size=size, length=6, stack=True)
    for i in range(len(ds)):
        item = ds[i]
        origin = item["meta"]["origin"].tolist()
        assert -16 <= origin[2] <= 0
        vols = volumes[item["meta"]["case"]]
        assert item["image"].shape == (2, *size) and "ct" not in item
        for channel, (name, pad) in enumerate((("CTres", -1024.0), ("SUV", 0.0))):
            expected = _expected(vols[name], origin, size, pad)
            np.testing.assert_array_equal(item["image"][channel].numpy(), expected)
        np.testing.assert_array_equal(
            item["label"][0].numpy(), _expected(vols["SEG"], origin, size, 0)
        )


def test_the_patch_affine_maps_its_first_voxel(corpus, volumes):
    ds = PatchDataset(corpus["nifti"], patch_size=PATCH, length=2)
    item = ds[1]
    case = AutopetCorpus(corpus["nifti"]).case(item["meta"]["case"])
    affine = case.volume("SUV").affine
    origin = item["meta"]["origin"].numpy()
    np.testing.assert_allclose(
        item["meta"]["affine"].numpy()[:3, 3], affine[:3, :3] @ origin + affine[:3, 3]
    )


@pytest.mark.parametrize("share", [0.0, 0.33, 0.5, 1.0])
def test_the_foreground_share_is_the_requested_one(corpus, share):
    n = 600
    ds = PatchDataset(corpus["hdf5-contiguous"], patch_size=PATCH, length=n,
                      oversample_foreground=share, seed=3)  # fmt: skip
    drawn = [ds.origin(i) for i in range(n)]
    forced = [fg for _, _, fg in drawn]
    assert abs(sum(forced) / n - share) <= 0.01
    for key in ds.keys:  # each case gets its share, not only the whole
        mine = [fg for k, _, fg in drawn if k == key]
        assert abs(sum(mine) / len(mine) - share) <= 0.02
    # A foreground patch holds lesion voxels: its centre is one, inside the volume.
    for i in [i for i, f in enumerate(forced) if f][:20]:
        assert ds[i]["label"].any()


def test_a_foreground_patch_is_centred_on_a_lesion_voxel(corpus, volumes):
    ds = PatchDataset(corpus["hdf5-contiguous"], patch_size=(9, 9, 9), length=30,
                      oversample_foreground=1.0)  # fmt: skip
    for i in range(len(ds)):
        key, origin, fg = ds.origin(i)
        assert fg
        centre = tuple(o + 4 for o in origin)
        assert volumes[key]["SEG"][centre] == 1


def test_two_workers_give_the_same_patches_as_one_process(corpus):
    ds = PatchDataset(corpus["hdf5-contiguous"], patch_size=PATCH, length=12, seed=5)
    serial = [ds[i] for i in range(len(ds))]
    pickle.dumps(ds)  # no h5py handle travels to the workers
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    batches = list(loader)
    assert sum(len(b["meta"]["case"]) for b in batches) == 12
    origins = torch.cat([b["meta"]["origin"] for b in batches])
    assert origins.tolist() == [s["meta"]["origin"].tolist() for s in serial]
    suv = torch.cat([b["suv"] for b in batches])
    assert torch.equal(suv, torch.stack([s["suv"] for s in serial]))


def test_the_same_seed_gives_the_same_patches_and_another_seed_others(corpus):
    src = corpus["hdf5-chunked"]

    def origins(ds):
        return [ds.origin(i) for i in range(len(ds))]

    one = origins(PatchDataset(src, patch_size=PATCH, length=20, seed=1))
    assert origins(PatchDataset(src, patch_size=PATCH, length=20, seed=1)) == one
    assert origins(PatchDataset(src, patch_size=PATCH, length=20, seed=2)) != one
    other_epoch = PatchDataset(src, patch_size=PATCH, length=20, seed=1)
    other_epoch.set_epoch(1)
    assert origins(other_epoch) != one


def test_every_layout_gives_the_same_patch_for_the_same_origin(corpus):
    sets = {name: PatchDataset(src, patch_size=(20, 28, 36)) for name, src in corpus.items()}
    key = sets["nifti"].keys[0]
    for origin in [(0, 0, 0), (40, 30, 50), (-3, 90, 60)]:
        items = {name: ds.read_patch(key, origin) for name, ds in sets.items()}
        ref = items.pop("nifti")
        for item in items.values():
            for k in ("ct", "suv", "label"):
                assert torch.equal(item[k], ref[k])
            assert torch.equal(item["meta"]["affine"], ref["meta"]["affine"])


def test_a_fold_selects_its_subjects(corpus):
    split = json.loads((corpus["nifti"] / SPLITS_NAME).read_text())
    val = PatchDataset(corpus["hdf5-contiguous"], patch_size=PATCH, fold=0, part="val")
    train = PatchDataset(corpus["nifti"], patch_size=PATCH, fold=0, part="train")
    assert [k.split("/")[0] for k in val.keys] == split["folds"][0]
    assert [k.split("/")[0] for k in train.keys] == split["folds"][1]
