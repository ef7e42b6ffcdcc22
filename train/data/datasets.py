"""Readers for the published IQA datasets, in the layouts their authors distribute.

Each reader turns a dataset root into a list of `Sample`s (image, MOS as published, content
key, reference and distortion where they exist) and checks the layout first: a missing label
file, a missing folder, a label file without the expected columns, or images named in the
labels but absent on disk raise `DatasetLayoutError`, whose message names the dataset, the
root, what is missing and the layout expected. `read_dataset(name, root)` picks the reader.

Expected layouts (file names are matched case-insensitively, since copies of TID2013 and
LIVE Challenge mix `.bmp` and `.BMP`):

kadid10k    KADID-10k (FR, 81 references x 125 distortions). MOS in [1, 5], higher is better
            (the file calls it DMOS, but 5 means "imperceptible").
              dmos.csv       columns dist_img, ref_img, dmos, var (e.g. I01_01_01.png, I01.png, 4.57, 0.496)
              images/        distorted and reference images together: I01_01_01.png ..., I01.png ...

koniq10k    KonIQ-10k (NR, 10,073 in-the-wild images). MOS in [1, 5], higher is better.
              koniq10k_scores_and_distributions.csv   columns image_name, c1..c5, c_total, MOS, SD, MOS_zscore
              1024x768/       the images (512x384/ is used when 1024x768/ is absent)
              koniq10k_distributions_sets.csv         optional: the official split, from the KonIQ GitHub
                              repository (columns image_name, ..., set with training / validation / test;
                              its MOS column is on a 0-100 scale and is not used)

live        LIVE Image Quality Assessment Database, Release 2 (FR, 29 references, 779 distorted).
            DMOS, roughly [0, 100], lower is better.
              jp2k/ jpeg/ wn/ gblur/ fastfading/   img1.bmp ... in each (227, 233, 174, 174, 174 images)
              refimgs/        the 29 references: bikes.bmp, buildings.bmp, ...
              dmos.mat        variables dmos and orgs (1 x 982 each, in the folder order above;
                              orgs == 1 marks a reference copy, which is skipped)
              refnames_all.mat   variable refnames_all: 1 x 982 cell of reference file names

csiq        CSIQ (FR, 30 references, 866 distorted). DMOS in [0, 1], lower is better. The official
            labels are an .xlsx; the common plain-text form is used instead, as distributed with
            pyiqa, HyperIQA and DBCNN:
              csiq_label.txt  one "<distorted name> <dmos>" per line, e.g. "1600.AWGN.1.png 0.061989"
                              (the ".png" may be left out)
              dst_imgs/       distorted images, in any sub-folder: awgn/1600.AWGN.1.png, jpeg2000/..., ...
                              (a flat dst_imgs_all/ is accepted as well)
              src_imgs/       references: 1600.png, aerial_city.png, ...

tid2013     TID2013 (FR, 25 references x 24 distortions x 5 levels). MOS in [0, 9], higher is better.
              mos_with_names.txt   one "<mos> <name>" per line, e.g. "5.51429 i01_01_1.bmp"
              distorted_images/    i01_01_1.bmp ... (case varies)
              reference_images/    I01.BMP ... I24.BMP, i25.bmp

spaq        SPAQ (NR, 11,125 smartphone photos). MOS in [0, 100], higher is better.
              Annotations/MOS and Image attribute scores.csv   columns Image name, MOS, Brightness, ...
                              (also accepted at the root). The official file is the .xlsx of the same
                              name; reading it needs openpyxl, which iqart does not depend on, so save
                              it as CSV (same columns) next to it.
              TestImage/      00001.jpg ... 11125.jpg

clive       LIVE In the Wild Image Quality Challenge (CLIVE; NR, 1,162 images). MOS in [0, 100],
            higher is better.
              Data/AllImages_release.mat   variable AllImages_release: 1169 x 1 cell of file names
              Data/AllMOS_release.mat      variable AllMOS_release: 1 x 1169 MOS
              Images/         the rated images; the first 7 entries (t1.bmp ... t7.bmp, the practice
                              images in Images/trainingImages/) are skipped, as in published work

`split` gives the train/test split: the official one where the dataset ships one (KonIQ),
otherwise a seeded 80/20 split by content for full-reference datasets (no reference scene on
both sides) and by image for authentic ones. `MOSDataset` decodes, crops and normalises.
"""

from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.io
import torch
from PIL import Image

MISSING_LISTED = 5  # how many missing files an error message names


class DatasetLayoutError(ValueError):
    """A dataset root does not hold the expected files; the message says what and where."""


@dataclass(frozen=True)
class Sample:
    image: Path
    mos: float  # as published: MOS or DMOS on the dataset's own scale
    content: str  # the scene: reference image for synthetic datasets, the image itself otherwise
    reference: Path | None = None
    distortion: str | None = None  # type code as the dataset names it: "01" (KADID, TID), "jp2k" (LIVE), "awgn" (CSIQ)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str  # "fr" when the dataset has reference images, else "nr"
    mos_range: tuple[float, float]
    higher_better: bool
    official_split: bool
    official_test: frozenset[Path] = field(default=frozenset(), repr=False)  # test images of the official split


class DatasetReader:
    """One dataset's layout: class attributes describe it, `read` checks and parses it."""

    TITLE: str
    TASK: str
    MOS_RANGE: tuple[float, float]
    HIGHER_BETTER: bool
    LAYOUT: str

    def __init__(self, root):
        self.root = Path(root)

    def read(self) -> tuple[list[Sample], frozenset[Path] | None]:
        """Samples, and the official test images (None when the dataset ships no split)."""
        raise NotImplementedError

    # Helpers that fail with the dataset's layout in the message.

    def error(self, problem: str) -> DatasetLayoutError:
        return DatasetLayoutError(f"{self.TITLE} at {self.root}: {problem}\nExpected layout:\n{self.LAYOUT}")

    def file(self, *candidates: str) -> Path:
        for name in candidates:
            if (self.root / name).is_file():
                return self.root / name
        raise self.error(f"missing label file {' or '.join(candidates)}")

    def folder(self, *candidates: str) -> Path:
        for name in candidates:
            if (self.root / name).is_dir():
                return self.root / name
        raise self.error(f"missing image folder {' or '.join(name + '/' for name in candidates)}")

    def number(self, text: str, where: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise self.error(f"{where}: {text!r} is not a number") from None
        if not np.isfinite(value):
            raise self.error(f"{where}: score is {text}")
        return value

    def csv_rows(self, path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in columns if name not in header]
            if missing:
                raise self.error(f"{path.name} lacks column(s) {', '.join(missing)} (found: {', '.join(header)})")
            reader.fieldnames = header
            rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
        if not rows:
            raise self.error(f"{path.name} lists no images")
        return rows

    def mat_variable(self, path: Path, name: str) -> np.ndarray:
        try:
            contents = scipy.io.loadmat(path)
        except Exception as error:  # noqa: BLE001 - damaged files raise MatReadError, ValueError, IndexError, ...
            raise self.error(f"{path.name} is not a readable MATLAB file ({error})") from None
        if name not in contents:
            found = ", ".join(k for k in contents if not k.startswith("__"))
            raise self.error(f"{path.name} has no variable {name!r} (found: {found})")
        return np.asarray(contents[name])

    def resolve(self, folder: Path, names: list[str], listed_in: Path, recursive: bool = False) -> list[Path]:
        """Paths of `names` in `folder`, matched case-insensitively; every missing one is an error."""
        files = folder.rglob("*") if recursive else folder.iterdir()
        index = {p.name.lower(): p for p in files if p.is_file()}
        paths = [index.get(Path(name).name.lower()) for name in names]
        missing = sorted({name for name, path in zip(names, paths, strict=True) if path is None})
        if missing:
            shown = ", ".join(missing[:MISSING_LISTED]) + (", ..." if len(missing) > MISSING_LISTED else "")
            raise self.error(f"{len(missing)} image(s) listed in {listed_in.name} are missing from {folder}: {shown}")
        return paths


def _mat_strings(cells: np.ndarray) -> list[str]:
    """File names from a MATLAB cell array as scipy.io.loadmat returns it (nested object arrays)."""

    def unwrap(item) -> str:
        while isinstance(item, np.ndarray):
            item = item.item() if item.size == 1 else item.ravel()[0]
        return str(item).strip()

    return [unwrap(item) for item in cells.ravel()]


class KADID10k(DatasetReader):
    TITLE, TASK, MOS_RANGE, HIGHER_BETTER = "KADID-10k", "fr", (1.0, 5.0), True
    LAYOUT = """\
  <root>/dmos.csv      columns dist_img, ref_img, dmos, var   (e.g. I01_01_01.png,I01.png,4.57,0.496)
  <root>/images/       distorted and reference images: I01_01_01.png ..., I01.png ..."""

    def read(self):
        labels = self.file("dmos.csv")
        rows = self.csv_rows(labels, ("dist_img", "ref_img", "dmos"))
        images = self.folder("images")
        distorted = self.resolve(images, [r["dist_img"] for r in rows], labels)
        references = self.resolve(images, [r["ref_img"] for r in rows], labels)
        samples = [
            Sample(
                image=image,
                mos=self.number(row["dmos"], f"{labels.name} line {line}"),
                content=Path(row["ref_img"]).stem.upper(),
                reference=reference,
                distortion=Path(row["dist_img"]).stem.split("_")[1] if "_" in row["dist_img"] else None,
            )
            for line, (row, image, reference) in enumerate(zip(rows, distorted, references, strict=True), start=2)
        ]
        return samples, None


class KonIQ10k(DatasetReader):
    TITLE, TASK, MOS_RANGE, HIGHER_BETTER = "KonIQ-10k", "nr", (1.0, 5.0), True
    SETS: ClassVar[dict[str, str]] = {"training": "train", "validation": "train", "test": "test"}
    LAYOUT = """\
  <root>/koniq10k_scores_and_distributions.csv   columns image_name, c1..c5, c_total, MOS, SD, MOS_zscore
  <root>/1024x768/                               the images (or <root>/512x384/)
  <root>/koniq10k_distributions_sets.csv         optional official split: columns image_name, ..., set
                                                 (training / validation / test)"""

    def read(self):
        labels = self.file("koniq10k_scores_and_distributions.csv")
        rows = self.csv_rows(labels, ("image_name", "MOS"))
        paths = self.resolve(self.folder("1024x768", "512x384"), [r["image_name"] for r in rows], labels)
        samples = [
            Sample(image=path, mos=self.number(row["MOS"], f"{labels.name} line {line}"), content=path.stem)
            for line, (row, path) in enumerate(zip(rows, paths, strict=True), start=2)
        ]
        sets_file = self.root / "koniq10k_distributions_sets.csv"
        if not sets_file.is_file():
            return samples, None
        sets = {}
        for row in self.csv_rows(sets_file, ("image_name", "set")):
            if row["set"] not in self.SETS:
                raise self.error(f"{sets_file.name}: unknown set {row['set']!r} for {row['image_name']}")
            sets[row["image_name"]] = self.SETS[row["set"]]
        unassigned = [row["image_name"] for row in rows if row["image_name"] not in sets]
        if unassigned:
            raise self.error(
                f"{len(unassigned)} image(s) of {labels.name} have no set in {sets_file.name}: "
                + ", ".join(unassigned[:MISSING_LISTED])
            )
        test = frozenset(path for row, path in zip(rows, paths, strict=True) if sets[row["image_name"]] == "test")
        return samples, test


class LIVE(DatasetReader):
    TITLE, TASK, MOS_RANGE, HIGHER_BETTER = "LIVE Release 2", "fr", (0.0, 100.0), False
    FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
    LAYOUT = """\
  <root>/jp2k/ jpeg/ wn/ gblur/ fastfading/   img1.bmp, img2.bmp, ... (227, 233, 174, 174, 174 images)
  <root>/refimgs/                             the 29 references (bikes.bmp, ...)
  <root>/dmos.mat                             variables dmos, orgs: 1 x 982, in the folder order above
  <root>/refnames_all.mat                     variable refnames_all: 1 x 982 cell of reference names"""

    def read(self):
        dmos_file, refnames_file = self.file("dmos.mat"), self.file("refnames_all.mat")
        dmos = self.mat_variable(dmos_file, "dmos").astype(np.float64).ravel()
        orgs = self.mat_variable(dmos_file, "orgs").ravel()
        refnames = _mat_strings(self.mat_variable(refnames_file, "refnames_all"))
        expected = sum(count for _, count in self.FOLDERS)
        if not len(dmos) == len(orgs) == len(refnames) == expected:
            raise self.error(
                f"dmos ({len(dmos)}), orgs ({len(orgs)}) and refnames_all ({len(refnames)}) must each hold "
                f"{expected} entries"
            )
        entries = [(folder, f"img{k}.bmp") for folder, count in self.FOLDERS for k in range(1, count + 1)]
        keep = [i for i in range(expected) if orgs[i] != 1]
        for i in keep:
            if not np.isfinite(dmos[i]):
                raise self.error(f"{dmos_file.name}: dmos of {'/'.join(entries[i])} is {dmos[i]}")
        distorted = {}
        for folder, _ in self.FOLDERS:
            names = [entries[i][1] for i in keep if entries[i][0] == folder]
            for name, path in zip(names, self.resolve(self.folder(folder), names, dmos_file), strict=True):
                distorted[folder, name] = path
        references = self.resolve(self.folder("refimgs"), [refnames[i] for i in keep], refnames_file)
        return [
            Sample(distorted[entries[i]], float(dmos[i]), Path(refnames[i]).stem, reference, entries[i][0])
            for i, reference in zip(keep, references, strict=True)
        ], None


class CSIQ(DatasetReader):
    TITLE, TASK, MOS_RANGE, HIGHER_BETTER = "CSIQ", "fr", (0.0, 1.0), False
    LAYOUT = """\
  <root>/csiq_label.txt   "<distorted name> <dmos>" per line, e.g. "1600.AWGN.1.png 0.061989" (.png optional)
  <root>/dst_imgs/        distorted images in any sub-folder (awgn/1600.AWGN.1.png, ...), or flat dst_imgs_all/
  <root>/src_imgs/        references: 1600.png, aerial_city.png, ..."""

    def read(self):
        labels = self.file("csiq_label.txt")
        names, scores = [], []
        for line, text in enumerate(labels.read_text().splitlines(), start=1):
            words = text.split()
            if not words:
                continue
            if len(words) != 2:
                raise self.error(f"{labels.name} line {line}: expected '<name> <dmos>', got {text!r}")
            name = words[0] if words[0].lower().endswith(".png") else words[0] + ".png"
            names.append(name)
            scores.append(self.number(words[1], f"{labels.name} line {line}"))
        if not names:
            raise self.error(f"{labels.name} lists no images")
        distorted = self.resolve(self.folder("dst_imgs", "dst_imgs_all"), names, labels, recursive=True)
        contents = [name.split(".")[0] for name in names]
        references = self.resolve(self.folder("src_imgs"), [c + ".png" for c in contents], labels)
        return [
            Sample(image, score, content, reference, name.split(".")[1].lower() if name.count(".") >= 2 else None)
            for image, score, content, reference, name in zip(
                distorted, scores, contents, references, names, strict=True
            )
        ], None


class TID2013(DatasetReader):
    TITLE, TASK, MOS_RANGE, HIGHER_BETTER = "TID2013", "fr", (0.0, 9.0), True
    LAYOUT = """\
  <root>/mos_with_names.txt   "<mos> <name>" per line, e.g. "5.51429 i01_01_1.bmp"
  <root>/distorted_images/    i01_01_1.bmp ... (any case)
  <root>/reference_images/    I01.BMP ... I24.BMP, i25.bmp"""
    NAME = re.compile(r"^i(\d\d)_(\d\d)_(\d)\.bmp$", re.IGNORECASE)

    def read(self):
        labels = self.file("mos_with_names.txt")
        names, scores = [], []
        for line, text in enumerate(labels.read_text().splitlines(), start=1):
            words = text.split()
            if not words:
                continue
            if len(words) != 2 or not self.NAME.match(words[1]):
                raise self.error(f"{labels.name} line {line}: expected '<mos> iNN_DD_L.bmp', got {text!r}")
            scores.append(self.number(words[0], f"{labels.name} line {line}"))
            names.append(words[1])
        if not names:
            raise self.error(f"{labels.name} lists no images")
        parsed = [self.NAME.match(name).groups() for name in names]
        distorted = self.resolve(self.folder("distorted_images"), names, labels)
        references = self.resolve(self.folder("reference_images"), [f"I{ref}.BMP" for ref, _, _ in parsed], labels)
        return [
            Sample(image, score, f"I{ref}", reference, kind)
            for image, score, (ref, kind, _), reference in zip(distorted, scores, parsed, references, strict=True)
        ], None


class SPAQ(DatasetReader):
    TITLE, TASK, MOS_RANGE, HIGHER_BETTER = "SPAQ", "nr", (0.0, 100.0), True
    LABELS = "MOS and Image attribute scores"
    LAYOUT = """\
  <root>/Annotations/MOS and Image attribute scores.csv   columns Image name, MOS, Brightness, ... (a CSV
                     export of the official .xlsx, which needs openpyxl; also accepted at <root>/)
  <root>/TestImage/  00001.jpg ... 11125.jpg"""

    def read(self):
        candidates = [f"Annotations/{self.LABELS}.csv", f"{self.LABELS}.csv"]
        if not any((self.root / c).is_file() for c in candidates):
            for xlsx in (self.root / f"Annotations/{self.LABELS}.xlsx", self.root / f"{self.LABELS}.xlsx"):
                if xlsx.is_file():
                    raise self.error(
                        f"found only {xlsx.relative_to(self.root)}; reading .xlsx needs openpyxl, which iqart does "
                        f"not depend on. Save it as CSV with the same columns: {xlsx.with_suffix('.csv')}"
                    )
        labels = self.file(*candidates)
        rows = self.csv_rows(labels, ("Image name", "MOS"))
        paths = self.resolve(self.folder("TestImage"), [r["Image name"] for r in rows], labels)
        return [
            Sample(image=path, mos=self.number(row["MOS"], f"{labels.name} line {line}"), content=path.stem)
            for line, (row, path) in enumerate(zip(rows, paths, strict=True), start=2)
        ], None


class CLIVE(DatasetReader):
    TITLE, TASK, MOS_RANGE, HIGHER_BETTER = "LIVE Challenge (CLIVE)", "nr", (0.0, 100.0), True
    PRACTICE = re.compile(r"^t\d+\.bmp$", re.IGNORECASE)  # the 7 practice images, not part of the benchmark
    LAYOUT = """\
  <root>/Data/AllImages_release.mat   variable AllImages_release: 1169 x 1 cell of image names
  <root>/Data/AllMOS_release.mat      variable AllMOS_release: 1 x 1169 MOS
  <root>/Images/                      the images; entries t1.bmp ... t7.bmp (practice images, in
                                      Images/trainingImages/) are skipped"""

    def read(self):
        names_file, mos_file = self.file("Data/AllImages_release.mat"), self.file("Data/AllMOS_release.mat")
        names = _mat_strings(self.mat_variable(names_file, "AllImages_release"))
        mos = self.mat_variable(mos_file, "AllMOS_release").astype(np.float64).ravel()
        if len(names) != len(mos):
            raise self.error(f"AllImages_release has {len(names)} names but AllMOS_release {len(mos)} scores")
        rated = [(name, float(score)) for name, score in zip(names, mos, strict=True) if not self.PRACTICE.match(name)]
        if not rated:
            raise self.error(f"{names_file.name} lists no rated images")
        for name, score in rated:
            if not np.isfinite(score):
                raise self.error(f"{mos_file.name}: MOS of {name} is {score}")
        paths = self.resolve(self.folder("Images"), [name for name, _ in rated], names_file)
        return [
            Sample(image=path, mos=score, content=path.stem) for path, (_, score) in zip(paths, rated, strict=True)
        ], None


DATASETS: dict[str, type[DatasetReader]] = {
    "kadid10k": KADID10k,
    "koniq10k": KonIQ10k,
    "live": LIVE,
    "csiq": CSIQ,
    "tid2013": TID2013,
    "spaq": SPAQ,
    "clive": CLIVE,
}


def read_dataset(name: str, root) -> tuple[DatasetInfo, list[Sample]]:
    """The dataset `name` (a key of DATASETS) stored under `root`: its description and samples."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    reader = DATASETS[name](root)
    if not reader.root.is_dir():
        raise reader.error("the root folder does not exist")
    samples, official_test = reader.read()
    info = DatasetInfo(
        name=name,
        task=reader.TASK,
        mos_range=reader.MOS_RANGE,
        higher_better=reader.HIGHER_BETTER,
        official_split=official_test is not None,
        official_test=official_test or frozenset(),
    )
    return info, samples


def split(info: DatasetInfo, samples: list[Sample], seed: int = 0, train_fraction: float = 0.8):
    """(train, test), each in the input order.

    The official split where the dataset ships one (seed and fraction are then ignored);
    otherwise a seeded split by content for FR datasets, so that no reference scene is on both
    sides, and by image for authentic (NR) datasets.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    if info.official_split:
        return [s for s in samples if s.image not in info.official_test], [
            s for s in samples if s.image in info.official_test
        ]
    keys = [s.content for s in samples] if info.task == "fr" else [str(s.image) for s in samples]
    groups = sorted(set(keys))
    random.Random(seed).shuffle(groups)
    n_train = min(max(round(train_fraction * len(groups)), 1), len(groups) - 1) if len(groups) > 1 else len(groups)
    train_keys = set(groups[:n_train])
    return [s for s, k in zip(samples, keys, strict=True) if k in train_keys], [
        s for s, k in zip(samples, keys, strict=True) if k not in train_keys
    ]


def normalize_mos(info: DatasetInfo, mos: float) -> float:
    """A published score mapped to [0, 1] with higher = better (DMOS flipped, clipped to the range)."""
    low, high = info.mos_range
    value = (float(mos) - low) / (high - low)
    if not info.higher_better:
        value = 1.0 - value
    return min(max(value, 0.0), 1.0)


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _upscale_to(image: Image.Image, crop: int) -> Image.Image:
    """Resize so the short side is at least `crop` (keeping the aspect ratio)."""
    width, height = image.size
    if min(width, height) >= crop:
        return image
    scale = crop / min(width, height)
    size = (max(crop, round(width * scale)), max(crop, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


class MOSDataset(torch.utils.data.Dataset):
    """Samples as training items: dict(image, [reference,] target).

    `image` (and for FR `reference`) are float (3, crop, crop) in [0, 1]; `target` is the MOS
    normalised by `normalize_mos` as float32. Images whose short side is below `crop` are first
    resized up. Training draws a random crop and a random horizontal flip, the same for the
    distorted image and its reference so the pair stays aligned; evaluation takes the centre crop.
    """

    def __init__(
        self, samples: list[Sample], info: DatasetInfo, crop: int = 224, train: bool = True, task: str | None = None
    ):
        task = task or info.task
        if task not in ("nr", "fr"):
            raise ValueError(f"task must be 'nr' or 'fr', got {task!r}")
        if task == "fr" and any(s.reference is None for s in samples):
            raise ValueError(f"{info.name}: task 'fr' needs reference images, and some samples have none")
        self.samples, self.info, self.crop, self.train, self.task = list(samples), info, crop, train, task

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        images = [_load_rgb(sample.image)]
        if self.task == "fr":
            images.append(_load_rgb(sample.reference))
            if images[0].size != images[1].size:
                raise ValueError(
                    f"{sample.image} is {images[0].size} but its reference {sample.reference} is {images[1].size}"
                )
        images = [_upscale_to(image, self.crop) for image in images]
        width, height = images[0].size
        if self.train:
            top = int(torch.randint(0, height - self.crop + 1, ()))
            left = int(torch.randint(0, width - self.crop + 1, ()))
            flip = bool(torch.rand(()) < 0.5)
        else:
            top, left, flip = (height - self.crop) // 2, (width - self.crop) // 2, False
        crops = [image.crop((left, top, left + self.crop, top + self.crop)) for image in images]
        if flip:
            crops = [c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for c in crops]
        item = {"image": _to_tensor(crops[0])}
        if self.task == "fr":
            item["reference"] = _to_tensor(crops[1])
        item["target"] = torch.tensor(normalize_mos(self.info, sample.mos), dtype=torch.float32)
        return item
