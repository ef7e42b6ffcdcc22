"""Each reader on a tiny copy of its dataset's real layout, written here into tmp_path."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from iqart.train.data.datasets import (
    DATASETS,
    LIVE,
    DatasetInfo,
    DatasetLayoutError,
    MOSDataset,
    Sample,
    normalize_mos,
    read_dataset,
    split,
)


def write_image(path: Path, seed: int, size=(12, 10)) -> Path:
    """A small noise image in the format the extension names (.png, .bmp, .jpg, any case)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list], quote_all=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(rows)


def cell(names: list[str], shape) -> np.ndarray:
    """A MATLAB cell array of strings, as scipy.io.savemat writes it."""
    array = np.empty(len(names), dtype=object)
    array[:] = names
    return array.reshape(shape)


# Fixture builders: each writes a dataset and returns {distorted file name: (mos, content, reference name, distortion)}
# plus the file the layout-error tests delete (the label file) and one listed image.


def make_kadid10k(root: Path, n_refs=3, n_dists=2):
    expected, rows = {}, []
    for r in range(1, n_refs + 1):
        ref = f"I{r:02d}.png"
        write_image(root / "images" / ref, seed=r)
        for d in range(1, n_dists + 1):
            dist, mos = f"I{r:02d}_{d:02d}_{(r + d) % 5 + 1:02d}.png", 1.0 + (r * 7 + d * 3) % 40 / 10
            write_image(root / "images" / dist, seed=100 * r + d)
            rows.append([dist, ref, mos, 0.5])
            expected[dist] = (mos, f"I{r:02d}", ref, f"{d:02d}")
    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    return expected, "dmos.csv", "images/I01_01_03.png"


KONIQ_SETS = {
    "10004473376.jpg": "training",
    "10007357496.jpg": "test",
    "10007903636.jpg": "training",
    "10009096245.jpg": "validation",
    "100117038.jpg": "test",
    "10012398043.jpg": "training",
}


def make_koniq10k(root: Path, with_sets=True):
    expected, rows, set_rows = {}, [], []
    for i, name in enumerate(KONIQ_SETS):
        mos = 1.5 + 0.5 * i
        write_image(root / "1024x768" / name, seed=i)
        rows.append([name, 0.0, 0.1, 0.4, 0.4, 0.1, 100, mos, 0.5, 20.0 * mos - 20.0])
        set_rows.append([name, 0.0, 0.1, 0.4, 0.4, 0.1, 100, 20.0 * mos - 20.0, 0.5, KONIQ_SETS[name]])
        expected[name] = (mos, Path(name).stem, None, None)
    write_csv(
        root / "koniq10k_scores_and_distributions.csv",
        ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"],
        rows,
        quote_all=True,
    )
    if with_sets:
        write_csv(
            root / "koniq10k_distributions_sets.csv",
            ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"],
            set_rows,
        )
    return expected, "koniq10k_scores_and_distributions.csv", "1024x768/10007357496.jpg"


LIVE_DISTORTED = {0: "bikes.bmp", 4: "caps.bmp", 228: "bikes.bmp", 462: "house.bmp", 634: "caps.bmp", 981: "house.bmp"}


def make_live(root: Path):
    """Entries not in LIVE_DISTORTED are marked orgs == 1 (reference copies), which the reader skips."""
    starts = np.cumsum([0] + [count for _, count in LIVE.FOLDERS])
    expected = {}
    dmos, orgs, refnames = np.zeros((1, 982)), np.ones((1, 982)), ["bikes.bmp"] * 982
    for ref in sorted(set(LIVE_DISTORTED.values())):
        write_image(root / "refimgs" / ref, seed=len(ref))
    for index, ref in LIVE_DISTORTED.items():
        folder_number = int(np.searchsorted(starts, index, side="right")) - 1
        folder, k = LIVE.FOLDERS[folder_number][0], index - starts[folder_number] + 1
        dmos[0, index], orgs[0, index], refnames[index] = 10.0 + index / 10, 0, ref
        write_image(root / folder / f"img{k}.bmp", seed=index)
        expected[f"{folder}/img{k}.bmp"] = (dmos[0, index], Path(ref).stem, ref, folder)
    scipy.io.savemat(root / "dmos.mat", {"dmos": dmos, "orgs": orgs})
    scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": cell(refnames, (1, 982))})
    return expected, "dmos.mat", "gblur/img1.bmp"


def make_csiq(root: Path):
    listed = [
        ("1600.AWGN.1.png", "awgn", 0.061989),
        ("1600.BLUR.2", "blur", 0.2),
        ("boston.jpeg2000.3.png", "jpeg2000", 0.35),
        ("boston.contrast.4.png", "contrast", 0.5),
    ]
    expected, lines = {}, []
    for i, (name, folder, dmos) in enumerate(listed):
        file_name = name if name.endswith(".png") else name + ".png"
        write_image(root / "dst_imgs" / folder / file_name, seed=i)
        content = name.split(".")[0]
        expected[file_name] = (dmos, content, f"{content}.png", name.split(".")[1].lower())
        lines.append(f"{name} {dmos}")
    for content in ("1600", "boston"):
        write_image(root / "src_imgs" / f"{content}.png", seed=len(content))
    (root / "csiq_label.txt").write_text("\n".join(lines) + "\n")
    return expected, "csiq_label.txt", "dst_imgs/jpeg2000/boston.jpeg2000.3.png"


def make_tid2013(root: Path):
    # (name in mos_with_names.txt, name on disk): the real release mixes the case of both
    listed = [
        ("i01_01_1.bmp", "i01_01_1.bmp", 5.51429),
        ("I01_11_1.BMP", "i01_11_1.bmp", 5.91429),
        ("i02_05_3.bmp", "I02_05_3.BMP", 5.43243),
        ("i25_24_5.bmp", "i25_24_5.bmp", 0.89189),
    ]
    expected, lines = {}, []
    for i, (name, on_disk, mos) in enumerate(listed):
        write_image(root / "distorted_images" / on_disk, seed=i)
        ref = name[1:3]
        reference = "i25.bmp" if ref == "25" else f"I{ref}.BMP"
        expected[on_disk] = (mos, f"I{ref}", reference, name.split("_")[1])
        lines.append(f"{mos:.5f} {name}")
    for reference in ("I01.BMP", "I02.BMP", "i25.bmp"):
        write_image(root / "reference_images" / reference, seed=len(reference))
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    return expected, "mos_with_names.txt", "distorted_images/I02_05_3.BMP"


SPAQ_LABELS = "Annotations/MOS and Image attribute scores.csv"


def make_spaq(root: Path):
    expected, rows = {}, []
    for i in range(1, 6):
        name, mos = f"{i:05d}.jpg", 10.0 * i + 0.25
        write_image(root / "TestImage" / name, seed=i)
        rows.append([name, mos, 50.0, 55.5, 60.0, 40.0, 42.0])
        expected[name] = (mos, f"{i:05d}", None, None)
    write_csv(
        root / SPAQ_LABELS,
        ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"],
        rows,
    )
    return expected, SPAQ_LABELS, "TestImage/00003.jpg"


def make_clive(root: Path):
    practice = [f"t{i}.bmp" for i in range(1, 8)]
    rated = [("3.bmp", 44.44), ("10.bmp", 82.91), ("1001.JPG", 55.5), ("100.bmp", 32.56)]
    names = practice + [name for name, _ in rated]
    mos = [60.0] * len(practice) + [score for _, score in rated]
    for i, name in enumerate(practice):
        write_image(root / "Images" / "trainingImages" / name, seed=i)
    for i, (name, _) in enumerate(rated):
        write_image(root / "Images" / name, seed=100 + i)
    (root / "Data").mkdir()
    scipy.io.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cell(names, (len(names), 1))})
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([mos])})
    expected = {name: (score, Path(name).stem, None, None) for name, score in rated}
    return expected, "Data/AllImages_release.mat", "Images/1001.JPG"


BUILDERS = {
    "kadid10k": make_kadid10k,
    "koniq10k": make_koniq10k,
    "live": make_live,
    "csiq": make_csiq,
    "tid2013": make_tid2013,
    "spaq": make_spaq,
    "clive": make_clive,
}
FULL_REFERENCE = {"kadid10k", "live", "csiq", "tid2013"}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_reader_returns_the_samples_of_the_layout(name, tmp_path):
    expected, _, _ = BUILDERS[name](tmp_path)
    info, samples = read_dataset(name, tmp_path)
    assert info.name == name
    assert info.task == ("fr" if name in FULL_REFERENCE else "nr")
    assert info.official_split == (name == "koniq10k")
    key = (lambda s: s.image.relative_to(tmp_path).as_posix()) if name == "live" else (lambda s: s.image.name)
    got = {key(s): s for s in samples}
    assert set(got) == set(expected)
    for image_name, (mos, content, reference, distortion) in expected.items():
        sample = got[image_name]
        assert sample.image.is_file() and sample.image.is_relative_to(tmp_path)
        assert sample.mos == pytest.approx(mos)
        assert sample.content == content
        assert sample.distortion == distortion
        if reference is None:
            assert sample.reference is None
        else:
            assert sample.reference.name == reference and sample.reference.is_file()


def test_every_dataset_documents_its_layout():
    import iqart.train.data.datasets as module

    assert set(DATASETS) == set(BUILDERS)
    for name, reader in DATASETS.items():
        assert reader.LAYOUT.strip() and f"\n{name} " in module.__doc__


def test_kadid_references_are_shared_by_their_distortions(tmp_path):
    make_kadid10k(tmp_path)
    _, samples = read_dataset("kadid10k", tmp_path)
    for sample in samples:
        assert sample.reference.name == f"{sample.content}.png"
        assert sample.image.name.startswith(sample.content + "_")


@pytest.mark.parametrize("name", list(BUILDERS))
def test_missing_label_file_names_it(name, tmp_path):
    _, label_file, _ = BUILDERS[name](tmp_path)
    (tmp_path / label_file).unlink()
    with pytest.raises(DatasetLayoutError) as caught:
        read_dataset(name, tmp_path)
    message = str(caught.value)
    assert Path(label_file).name in message and str(tmp_path) in message
    assert DATASETS[name].TITLE in message and "Expected layout" in message


@pytest.mark.parametrize("name", list(BUILDERS))
def test_missing_image_is_an_error_that_counts_and_names_it(name, tmp_path):
    _, _, image = BUILDERS[name](tmp_path)
    (tmp_path / image).unlink()
    with pytest.raises(DatasetLayoutError, match=r"1 image\(s\) listed in .* missing") as caught:
        read_dataset(name, tmp_path)
    assert Path(image).name.lower() in str(caught.value).lower()  # named as listed; TID2013 mixes case
    assert DATASETS[name].TITLE in str(caught.value)


def test_many_missing_images_are_counted_and_the_first_few_named(tmp_path):
    make_kadid10k(tmp_path, n_refs=4, n_dists=3)
    for path in sorted((tmp_path / "images").glob("I0?_*.png")):
        path.unlink()
    with pytest.raises(DatasetLayoutError, match=r"12 image\(s\) listed in dmos.csv .*I01_01_03.png.*, \.\.\."):
        read_dataset("kadid10k", tmp_path)


def test_missing_image_folder_and_root(tmp_path):
    make_tid2013(tmp_path)
    shutil.rmtree(tmp_path / "reference_images")
    with pytest.raises(DatasetLayoutError, match="missing image folder reference_images/"):
        read_dataset("tid2013", tmp_path)
    with pytest.raises(DatasetLayoutError, match="root folder does not exist"):
        read_dataset("clive", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown dataset 'pipal'; available: kadid10k"):
        read_dataset("pipal", tmp_path)


def test_label_file_with_wrong_columns(tmp_path):
    make_kadid10k(tmp_path)
    write_csv(tmp_path / "dmos.csv", ["image", "score"], [["I01_01_03.png", 3.0]])
    with pytest.raises(DatasetLayoutError, match="dmos.csv lacks column.*dist_img, ref_img, dmos"):
        read_dataset("kadid10k", tmp_path)


def test_spaq_with_only_the_official_xlsx_says_to_export_csv(tmp_path):
    make_spaq(tmp_path)
    csv_file = tmp_path / SPAQ_LABELS
    csv_file.with_suffix(".xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    csv_file.unlink()
    with pytest.raises(DatasetLayoutError, match=r"found only .*\.xlsx.*openpyxl.*Save it as CSV"):
        read_dataset("spaq", tmp_path)


def test_spaq_csv_at_the_root_is_accepted(tmp_path):
    expected, _, _ = make_spaq(tmp_path)
    (tmp_path / SPAQ_LABELS).rename(tmp_path / Path(SPAQ_LABELS).name)
    _, samples = read_dataset("spaq", tmp_path)
    assert len(samples) == len(expected)


def test_live_rejects_mat_files_of_the_wrong_length(tmp_path):
    make_live(tmp_path)
    scipy.io.savemat(tmp_path / "dmos.mat", {"dmos": np.zeros((1, 10)), "orgs": np.zeros((1, 10))})
    with pytest.raises(DatasetLayoutError, match="must each hold 982 entries"):
        read_dataset("live", tmp_path)
    scipy.io.savemat(tmp_path / "dmos.mat", {"scores": np.zeros((1, 982))})
    with pytest.raises(DatasetLayoutError, match="dmos.mat has no variable 'dmos'"):
        read_dataset("live", tmp_path)


def test_damaged_mat_file_is_a_layout_error(tmp_path):
    make_clive(tmp_path)
    (tmp_path / "Data" / "AllMOS_release.mat").write_bytes(b"MATLAB 5.0" + b"\0" * 20)
    with pytest.raises(DatasetLayoutError, match="AllMOS_release.mat is not a readable MATLAB file"):
        read_dataset("clive", tmp_path)


def test_koniq_uses_512x384_when_1024x768_is_absent(tmp_path):
    make_koniq10k(tmp_path)
    (tmp_path / "1024x768").rename(tmp_path / "512x384")
    _, samples = read_dataset("koniq10k", tmp_path)
    assert {s.image.parent.name for s in samples} == {"512x384"}


def test_koniq_official_split_is_honoured(tmp_path):
    make_koniq10k(tmp_path)
    info, samples = read_dataset("koniq10k", tmp_path)
    for seed in (0, 1, 2):
        train, test = split(info, samples, seed=seed, train_fraction=0.5)
        assert {s.image.name for s in test} == {n for n, s in KONIQ_SETS.items() if s == "test"}
        assert {s.image.name for s in train} == {n for n, s in KONIQ_SETS.items() if s != "test"}


def test_koniq_without_sets_file_is_split_at_random(tmp_path):
    make_koniq10k(tmp_path, with_sets=False)
    info, samples = read_dataset("koniq10k", tmp_path)
    assert not info.official_split
    train, test = split(info, samples, seed=0)
    assert len(train) + len(test) == len(samples) and test


def test_koniq_sets_file_must_cover_every_image(tmp_path):
    make_koniq10k(tmp_path)
    sets = tmp_path / "koniq10k_distributions_sets.csv"
    lines = sets.read_text().splitlines()
    sets.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetLayoutError, match="1 image.*no set in koniq10k_distributions_sets.csv"):
        read_dataset("koniq10k", tmp_path)


def synthetic(task: str, n_contents=20, per_content=5):
    info = DatasetInfo("test", task, (0.0, 1.0), True, official_split=False)
    if task == "fr":
        samples = [
            Sample(Path(f"c{c}_d{d}.png"), 0.5, f"c{c}", Path(f"c{c}.png"), str(d))
            for c in range(n_contents)
            for d in range(per_content)
        ]
    else:
        samples = [Sample(Path(f"{i}.jpg"), 0.5, str(i)) for i in range(n_contents * per_content)]
    return info, samples


@pytest.mark.parametrize("task", ["fr", "nr"])
def test_split_is_deterministic_disjoint_and_complete(task):
    info, samples = synthetic(task)
    train, test = split(info, samples, seed=3)
    assert (train, test) == split(info, samples, seed=3)
    assert split(info, samples, seed=4) != (train, test)
    assert not {s.image for s in train} & {s.image for s in test}
    assert sorted(s.image for s in train + test) == sorted(s.image for s in samples)
    assert [s for s in samples if s in train] == train  # input order kept
    if task == "fr":
        assert not {s.content for s in train} & {s.content for s in test}
        assert len({s.content for s in train}) == 16  # 80 % of 20 contents
    else:
        assert len(train) == 80


def test_fr_split_of_a_real_layout_keeps_contents_apart(tmp_path):
    make_kadid10k(tmp_path, n_refs=10, n_dists=3)
    info, samples = read_dataset("kadid10k", tmp_path)
    for seed in range(5):
        train, test = split(info, samples, seed=seed)
        assert len(train) == 24 and len(test) == 6
        assert not {s.content for s in train} & {s.content for s in test}
        assert not {s.reference for s in train} & {s.reference for s in test}


def test_split_rejects_a_bad_fraction():
    info, samples = synthetic("nr")
    with pytest.raises(ValueError, match="train_fraction"):
        split(info, samples, train_fraction=1.0)


@pytest.mark.parametrize(
    "name, published, normalised",
    [
        ("kadid10k", 1.0, 0.0),
        ("kadid10k", 5.0, 1.0),
        ("kadid10k", 3.0, 0.5),
        ("koniq10k", 4.0, 0.75),
        ("tid2013", 4.5, 0.5),
        ("spaq", 25.0, 0.25),
        ("clive", 80.0, 0.8),
        ("live", 0.0, 1.0),
        ("live", 100.0, 0.0),
        ("live", 25.0, 0.75),
        ("live", 120.0, 0.0),
        ("csiq", 0.0, 1.0),
        ("csiq", 0.2, 0.8),
        ("csiq", 1.0, 0.0),
    ],
)
def test_normalize_mos_maps_to_unit_range_higher_better(name, published, normalised):
    reader = DATASETS[name]
    info = DatasetInfo(name, reader.TASK, reader.MOS_RANGE, reader.HIGHER_BETTER, official_split=False)
    assert normalize_mos(info, published) == pytest.approx(normalised)


def test_dmos_datasets_are_lower_better():
    assert {name for name, reader in DATASETS.items() if not reader.HIGHER_BETTER} == {"live", "csiq"}


def pair_dataset(tmp_path, size, crop, train, same=True):
    reference = write_image(tmp_path / "ref.png", seed=1, size=size)
    distorted = tmp_path / "dist.png"
    if same:
        shutil.copy(reference, distorted)
    else:
        write_image(distorted, seed=2, size=size)
    info = DatasetInfo("csiq", "fr", (0.0, 1.0), False, official_split=False)
    return MOSDataset([Sample(distorted, 0.25, "ref", reference, "awgn")], info, crop=crop, train=train)


def test_training_crops_of_a_pair_are_aligned_and_random(tmp_path):
    dataset = pair_dataset(tmp_path, size=(48, 40), crop=32, train=True)
    torch.manual_seed(0)
    items = [dataset[0] for _ in range(20)]
    for item in items:
        assert set(item) == {"image", "reference", "target"}
        assert item["image"].shape == item["reference"].shape == (3, 32, 32)
        assert item["image"].dtype == torch.float32 and 0.0 <= item["image"].min() <= item["image"].max() <= 1.0
        assert torch.equal(item["image"], item["reference"])
        assert item["target"].dtype == torch.float32 and item["target"].item() == pytest.approx(0.75)
    assert len({item["image"].sum().item() for item in items}) > 5  # crops and flips vary


def test_training_crop_and_flip_match_a_crop_of_the_full_image(tmp_path):
    dataset = pair_dataset(tmp_path, size=(48, 40), crop=32, train=True, same=False)
    full = torch.from_numpy(np.array(Image.open(tmp_path / "dist.png"))).permute(2, 0, 1).float() / 255
    full_ref = torch.from_numpy(np.array(Image.open(tmp_path / "ref.png"))).permute(2, 0, 1).float() / 255
    torch.manual_seed(1)
    flips = set()
    for _ in range(20):
        item = dataset[0]
        crops = {(top, left): full[:, top : top + 32, left : left + 32] for top in range(9) for left in range(17)}
        matches = [
            (top, left, flip)
            for (top, left), crop in crops.items()
            for flip in (False, True)
            if torch.equal(item["image"], crop.flip(-1) if flip else crop)
        ]
        assert len(matches) == 1
        top, left, flip = matches[0]
        crop_ref = full_ref[:, top : top + 32, left : left + 32]
        assert torch.equal(item["reference"], crop_ref.flip(-1) if flip else crop_ref)
        flips.add(flip)
    assert flips == {False, True}


def test_eval_takes_the_centre_crop(tmp_path):
    dataset = pair_dataset(tmp_path, size=(48, 40), crop=32, train=False, same=False)
    full = torch.from_numpy(np.array(Image.open(tmp_path / "dist.png"))).permute(2, 0, 1).float() / 255
    first, second = dataset[0], dataset[0]
    assert torch.equal(first["image"], second["image"])
    assert torch.equal(first["image"], full[:, 4:36, 8:40])


def test_small_images_are_resized_up_before_cropping(tmp_path):
    for train in (True, False):
        dataset = pair_dataset(tmp_path, size=(20, 12), crop=32, train=train)
        item = dataset[0]
        assert item["image"].shape == item["reference"].shape == (3, 32, 32)
        assert torch.equal(item["image"], item["reference"])


def test_nr_items_from_a_real_layout(tmp_path):
    make_clive(tmp_path)
    info, samples = read_dataset("clive", tmp_path)
    dataset = MOSDataset(samples, info, crop=8, train=False)
    assert len(dataset) == 4
    for i in range(len(dataset)):
        item = dataset[i]
        assert set(item) == {"image", "target"} and item["image"].shape == (3, 8, 8)
        assert 0.0 <= item["target"].item() <= 1.0
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 8, 8) and batch["target"].shape == (2,)


def test_fr_dataset_can_be_used_for_nr_training_but_not_the_reverse(tmp_path):
    make_tid2013(tmp_path)
    info, samples = read_dataset("tid2013", tmp_path)
    item = MOSDataset(samples, info, crop=8, task="nr")[0]
    assert set(item) == {"image", "target"}
    nr_info = DatasetInfo("spaq", "nr", (0.0, 100.0), True, official_split=False)
    with pytest.raises(ValueError, match="needs reference images"):
        MOSDataset([Sample(samples[0].image, 50.0, "x")], nr_info, task="fr")


def test_grey_and_rgba_images_are_converted_to_rgb(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((16, 16), 128, dtype=np.uint8)).save(grey)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((16, 16, 4), 200, dtype=np.uint8)).save(rgba)
    info = DatasetInfo("spaq", "nr", (0.0, 100.0), True, official_split=False)
    dataset = MOSDataset([Sample(grey, 50.0, "g"), Sample(rgba, 50.0, "r")], info, crop=8, train=False)
    assert dataset[0]["image"].shape == dataset[1]["image"].shape == (3, 8, 8)
