"""`trainers.data` and `trainers.safeio` on real formats the tests write themselves.

Python batches are written the way the original CIFAR-10 files were (Python 2
pickles naming ``numpy.core.multiarray``), image folders hold real PNG and JPEG
files, and hostile inputs are real tar archives and pickles.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pickle
import pickletools
import shutil
import socket
import struct
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from trainers.data import (
    CLASSES,
    CifarData,
    cache_file,
    default_cache_dir,
    download_cifar10,
    load_cifar10,
    read_unlabeled,
)
from trainers.safeio import DataError, restricted_load, restricted_loads, safe_extract

SHARED_ARCHIVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpeg.tar.gz"


# --- writing real formats ---------------------------------------------------------

class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (BINSTRING), as cPickle did."""

    dispatch: ClassVar[dict[type, Any]] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2_pickle(obj: Any) -> bytes:
    """A pickle like the original CIFAR-10 batches: protocol 2, Python 2 strings, numpy.core."""
    out = io.BytesIO()
    _Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue().replace(b"cnumpy._core.", b"cnumpy.core.")


def batch_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def write_batches(folder: Path, n: int = 3) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A cifar-10-batches-py folder with ``n`` images per batch; returns what it wrote."""
    folder.mkdir(parents=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        rows = batch_rows(n, seed)
        labels = [(seed + i) % 10 for i in range(n)]
        batch = {"batch_label": f"{name} of 6", "labels": labels, "data": rows,
                 "filenames": [f"img_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(py2_pickle(batch))
        written[name] = (rows, labels)
    meta = {"label_names": list(CLASSES), "num_cases_per_batch": n, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    (folder / "readme.html").write_text("<html></html>")
    return written


def make_tar(path: Path, source: Path, arcname: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source, arcname=arcname or source.name)
    return path


def colour(label: int, i: int) -> tuple[int, int, int]:
    return (20 * label + 5, 200 - 10 * i, 7 * label + 3 * i)


def write_image(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> None:
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[:] = rgb
    pixels[0, 0] = (255, 0, 128)  # one odd pixel, to catch flips and channel swaps
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


def write_image_tree(root: Path) -> Path:
    """train/<class>/ with one PNG and one JPEG per class, test/<class>/ with one PNG."""
    for label, name in enumerate(CLASSES):
        # Written out of name order: the loader must sort by file name.
        write_image(root / "train" / name / "b.jpg", colour(label, 1))
        write_image(root / "train" / name / "a.png", colour(label, 0))
        write_image(root / "test" / name / "t.png", colour(label, 2))
    (root / "README.txt").write_text("images beside a readme")
    return root


# --- python batches ---------------------------------------------------------------

def test_py2_style_pickle_names_numpy_core_and_loads(tmp_path: Path) -> None:
    rows = batch_rows(2, 0)
    blob = py2_pickle({"data": rows, "labels": [1, 2]})
    globals_named = [arg for op, arg, _ in pickletools.genops(blob) if op.name == "GLOBAL"]
    assert "numpy.core.multiarray _reconstruct" in globals_named
    batch = restricted_loads(blob, what="batch")
    assert isinstance(batch, dict)
    assert batch[b"labels"] == [1, 2]
    np.testing.assert_array_equal(batch[b"data"], rows)


def test_python_batch_folder_reads_pixels_in_hwc_rgb_order(tmp_path: Path) -> None:
    written = write_batches(tmp_path / "cifar-10-batches-py")
    data = load_cifar10(tmp_path / "cifar-10-batches-py", cache_dir=tmp_path / "cache")
    assert data.train_images.shape == (15, 32, 32, 3) and data.test_images.shape == (3, 32, 32, 3)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert data.classes == CLASSES
    rows, _ = written["data_batch_2"]
    image = data.train_images[3 + 1]  # second image of the second batch
    row, col = 5, 17  # the planes are R, G, B, each 32 x 32 row-major
    assert tuple(image[row, col]) == tuple(rows[1, c * 1024 + row * 32 + col] for c in range(3))
    expected_train = [y for i in range(1, 6) for y in written[f"data_batch_{i}"][1]]
    assert data.train_labels.tolist() == expected_train
    assert data.test_labels.tolist() == written["test_batch"][1]


def test_python_batch_tar_in_a_wrapper_folder_reads_the_same(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_batches(folder)
    archive = make_tar(tmp_path / "my-copy.tar.gz", folder)
    from_folder = load_cifar10(folder, cache_dir=tmp_path / "cache")
    from_tar = load_cifar10(archive, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(from_tar.train_images, from_folder.train_images)
    np.testing.assert_array_equal(from_tar.test_labels, from_folder.test_labels)
    assert from_tar.digest == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_official_archive_name_requires_the_official_md5(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_batches(folder)
    tampered = make_tar(tmp_path / "cifar-10-python.tar.gz", folder)
    with pytest.raises(DataError, match="md5") as info:
        load_cifar10(tampered, cache_dir=tmp_path / "cache")
    assert str(tampered) in str(info.value)


def test_missing_batch_and_foreign_class_names_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "batches"
    write_batches(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3"):
        load_cifar10(folder, cache_dir=tmp_path / "cache")
    write_batches(tmp_path / "other")
    meta = {"label_names": ["apple", *CLASSES[1:]]}
    (tmp_path / "other" / "batches.meta").write_bytes(py2_pickle(meta))
    with pytest.raises(DataError, match="label_names"):
        load_cifar10(tmp_path / "other", cache_dir=tmp_path / "cache")


def test_batch_with_wrong_data_shape_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "batches"
    write_batches(folder)
    bad = {"data": np.zeros((3, 1024), np.uint8), "labels": [0, 1, 2]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match="N x 3072") as info:
        load_cifar10(folder, cache_dir=tmp_path / "cache")
    assert "test_batch" in str(info.value)


# --- image folders ----------------------------------------------------------------

def check_image_tree(data: CifarData) -> None:
    assert data.train_images.shape == (20, 32, 32, 3) and data.test_images.shape == (10, 32, 32, 3)
    assert data.train_images.dtype == np.uint8 and data.test_labels.dtype == np.int64
    assert data.train_labels.tolist() == [label for label in range(10) for _ in range(2)]
    assert data.test_labels.tolist() == list(range(10))
    for label in range(10):
        png = data.train_images[2 * label]  # a.png sorts before b.jpg
        assert tuple(png[0, 0]) == (255, 0, 128)
        assert (png.reshape(-1, 3)[1:] == colour(label, 0)).all()
        jpeg = data.train_images[2 * label + 1].astype(int)
        assert np.abs(jpeg[16, 16] - colour(label, 1)).max() <= 4  # lossy, flat colour
        assert (data.test_images[label][5:, 5:] == colour(label, 2)).all()


def test_image_folder_reads_pngs_exactly_in_label_then_name_order(tmp_path: Path) -> None:
    root = write_image_tree(tmp_path / "cifar10")
    check_image_tree(load_cifar10(root, cache_dir=tmp_path / "cache"))


def test_image_folder_tar_with_wrapper_is_read_in_memory(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_image_tree(tmp_path / "tree")
    archive = make_tar(tmp_path / "images.tgz", root, arcname="cifar10")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # anything extracted would land here or beside the archive
    check_image_tree(load_cifar10(archive, cache_dir=tmp_path / "cache"))
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "images.tgz", "tree", "work"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: (r / "train" / "cat").rename(r / "train" / "kitten"), "unknown class folder"),
    (lambda r: [p.unlink() for p in (r / "test" / "dog").iterdir()], "no images for dog"),
    (lambda r: shutil.rmtree(r / "test"), "test: no images"),
    (lambda r: write_image(r / "test" / "cat" / "big.png", (1, 2, 3), (64, 48)),
     "64x48 pixels"),
    (lambda r: (r / "train" / "cat" / "bad.jpg").write_bytes(b"not a jpeg"),
     "cannot decode image"),
    (lambda r: (r / "train" / "cat" / "notes.txt").write_text("x"), "not an image"),
])
def test_bad_image_folders_are_refused_naming_the_path(tmp_path: Path, change: Any,
                                                       message: str) -> None:
    root = write_image_tree(tmp_path / "tree")
    change(root)
    with pytest.raises(DataError, match=message) as info:
        load_cifar10(root, cache_dir=tmp_path / "cache")
    assert str(root) in str(info.value) and "\n" not in str(info.value)


def test_missing_path_and_unknown_format_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_cifar10(tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    text = tmp_path / "data.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match="not a folder or a tar archive"):
        load_cifar10(text, cache_dir=tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds neither"):
        load_cifar10(tmp_path / "empty", cache_dir=tmp_path / "cache")


def test_truncated_archive_is_a_data_error(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "images.tar.gz", write_image_tree(tmp_path / "tree"))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.tar\.gz"):
        load_cifar10(cut, cache_dir=tmp_path / "cache")


def test_cifar_data_refuses_wrong_dtypes_and_shapes() -> None:
    images = np.zeros((4, 32, 32, 3), np.uint8)
    labels = np.arange(4, dtype=np.int64)
    CifarData(images, labels, images, labels)
    with pytest.raises(DataError, match="train_images must be a uint8"):
        CifarData(images.astype(np.float32), labels, images, labels)
    with pytest.raises(DataError, match="test_images must be a uint8"):
        CifarData(images, labels, images.transpose(0, 3, 1, 2), labels)
    with pytest.raises(DataError, match="test_labels must be an int64 array of 4"):
        CifarData(images, labels, images, labels[:3])
    with pytest.raises(DataError, match=r"must be in 0\.\.9"):
        CifarData(images, labels + 7, images, labels)


def test_data_error_is_one_line_and_survives_pickling() -> None:
    err = DataError("some/path", "bad\nthing  happened")
    assert str(err) == "some/path: bad thing happened"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.problem, str(copy)) == (err.path, err.problem, str(err))


# --- cache ------------------------------------------------------------------------

def test_second_load_reads_the_cache_and_a_corrupt_cache_is_rewritten(tmp_path: Path) -> None:
    root = write_image_tree(tmp_path / "tree")
    first = load_cifar10(root, cache_dir=tmp_path / "cache")
    cached = cache_file(first.digest, tmp_path / "cache")
    assert cached.is_file() and [p.name for p in cached.parent.iterdir()] == [cached.name]

    messages: list[str] = []
    second = load_cifar10(root, cache_dir=tmp_path / "cache", progress=messages.append)
    assert any("from cache" in m for m in messages)
    assert not any("decoding" in m for m in messages)
    np.testing.assert_array_equal(second.train_images, first.train_images)
    assert second.digest == first.digest

    cached.write_bytes(b"PK\x03\x04 this is not a zip file")
    messages.clear()
    third = load_cifar10(root, cache_dir=tmp_path / "cache", progress=messages.append)
    assert any("ignoring unusable cache" in m for m in messages)
    np.testing.assert_array_equal(third.test_images, first.test_images)
    with np.load(cached) as npz:  # rewritten whole
        np.testing.assert_array_equal(npz["train_labels"], first.train_labels)


def test_changed_content_gets_a_new_digest(tmp_path: Path) -> None:
    root = write_image_tree(tmp_path / "tree")
    before = load_cifar10(root, cache_dir=tmp_path / "cache")
    write_image(root / "test" / "cat" / "t.png", (0, 0, 0))
    after = load_cifar10(root, cache_dir=tmp_path / "cache")
    assert after.digest != before.digest
    assert (after.test_images[3][5:, 5:] == 0).all()


def test_cache_dir_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("SEARCH_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("SEARCH_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "resnet-budget-search"


# --- the shared JPEG archive (decoded once per session by conftest's cifar_jpeg) ---

def test_shared_archive_has_cifar10_in_label_order(cifar_jpeg: CifarData) -> None:
    data = cifar_jpeg
    assert data.train_images.shape == (50_000, 32, 32, 3)
    assert data.test_images.shape == (10_000, 32, 32, 3)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert np.bincount(data.train_labels).tolist() == [5_000] * 10
    assert np.bincount(data.test_labels).tolist() == [1_000] * 10
    assert data.classes == CLASSES
    assert (np.diff(data.train_labels) >= 0).all()  # class folders in label order
    mean = data.test_images.reshape(-1, 3).mean(axis=0) / 255
    np.testing.assert_allclose(mean, [0.494, 0.485, 0.450], atol=0.002)  # data/README.md


def test_shared_archive_second_load_comes_from_the_cache(
        cifar_jpeg: CifarData, tmp_path_factory: pytest.TempPathFactory) -> None:
    if not SHARED_ARCHIVE.exists():
        pytest.skip(f"{SHARED_ARCHIVE} is missing")
    name = cache_file(cifar_jpeg.digest, Path()).name
    found = list(tmp_path_factory.getbasetemp().glob(f"*/{name}"))
    assert found, "the cifar_jpeg fixture should cache under tmp_path_factory"
    messages: list[str] = []
    again = load_cifar10(SHARED_ARCHIVE, cache_dir=found[0].parent, progress=messages.append)
    assert any("from cache" in m for m in messages), messages
    assert again.digest == cifar_jpeg.digest
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(again, field), getattr(cifar_jpeg, field)), field


# --- hostile archives -------------------------------------------------------------

def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def hostile_tar(path: Path, kind: str, outside: Path) -> Path:
    """An otherwise valid image-folder tar with one member that escapes."""
    png = io.BytesIO()
    Image.new("RGB", (32, 32)).save(png, format="PNG")
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for name in CLASSES:
                add_bytes(tar, f"{split}/{name}/0.png", png.getvalue())
        if kind == "dotdot":
            add_bytes(tar, f"train/../../{outside.name}/evil.txt", b"pwned")
        elif kind == "absolute":
            add_bytes(tar, str(outside / "evil.txt"), b"pwned")
        else:  # a symlink to outside, then a file written through it
            link = tarfile.TarInfo("train/cat/link")
            link.type = tarfile.SYMTYPE
            link.linkname = str(outside)
            tar.addfile(link)
            add_bytes(tar, "train/cat/link/evil.txt", b"pwned")
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_unsafe_tar_members_are_refused_and_nothing_is_written(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = hostile_tar(tmp_path / "images.tar.gz", kind, outside)
    with pytest.raises(DataError, match="unsafe archive member") as info:
        load_cifar10(archive, cache_dir=tmp_path / "cache")
    assert str(archive) in str(info.value)
    target = tmp_path / "target" / "deeper"
    with pytest.raises(DataError, match="unsafe archive member"):
        safe_extract(archive, target)
    assert list(outside.iterdir()) == []
    assert list(target.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_will_not_follow_a_link_already_in_the_target(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "images.tar.gz", write_image_tree(tmp_path / "tree"),
                       arcname="cifar10")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "cifar10").symlink_to(outside)
    with pytest.raises(DataError, match="would be written outside"):
        safe_extract(archive, tmp_path / "target")
    assert list(outside.iterdir()) == []


def test_safe_extract_unpacks_a_clean_archive(tmp_path: Path) -> None:
    root = write_image_tree(tmp_path / "tree")
    archive = make_tar(tmp_path / "images.tar.gz", root, arcname="cifar10")
    out = safe_extract(archive, tmp_path / "out")
    assert out == (tmp_path / "out").resolve()
    assert (out / "cifar10" / "train" / "cat" / "a.png").read_bytes() == \
        (root / "train" / "cat" / "a.png").read_bytes()


# --- hostile and damaged pickles --------------------------------------------------

class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class _Eval:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (self.code,))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_pickle_is_refused_before_it_runs(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "marker"
    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps({b"data": _System(f"touch {marker}")}, protocol=protocol))
    with pytest.raises(DataError, match=r"refusing to unpickle \w+\.system") as info:
        restricted_load(hostile)
    assert str(hostile) in str(info.value)
    code = f"open({str(marker)!r}, 'w')"
    # Protocols below 3 spell the module the Python 2 way, __builtin__.
    with pytest.raises(DataError, match=r"refusing to unpickle (builtins|__builtin__)\.eval"):
        restricted_loads(pickle.dumps([_Eval(code)], protocol=protocol), what="eval.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_dict_pickle_round_trips(protocol: int) -> None:
    original = {b"data": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
                "floats": np.linspace(0, 1, 5, dtype=np.float32),
                "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
                "big_endian": np.arange(3, dtype=">i4"),
                "scalars": (np.int64(3), np.float32(0.5), 1.5, 2, None, True),
                "bytes": b"\x00\xff", "set": {1, 2}, "bytearray": bytearray(b"ab"),
                "nested": [{"labels": [1, 2, 3]}]}
    loaded = restricted_loads(pickle.dumps(original, protocol=protocol), what="ok.pkl")
    assert isinstance(loaded, dict) and loaded.keys() == original.keys()
    for key, value in original.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(loaded[key], value)
            # numpy itself restores '>i4' as native int32 below protocol 5.
            assert loaded[key].dtype.newbyteorder("=") == value.dtype.newbyteorder("=")
        else:
            assert loaded[key] == value


def test_truncated_and_garbage_pickles_are_data_errors(tmp_path: Path) -> None:
    blob = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4})
    for cut in (1, len(blob) // 2, len(blob) - 1):
        with pytest.raises(DataError, match="not a readable pickle"):
            restricted_loads(blob[:cut], what="cut.pkl")
    for garbage in (b"", b"hello world", os.urandom(64)):
        with pytest.raises(DataError, match=r"garbage\.pkl"):
            restricted_loads(garbage, what="garbage.pkl")
    with pytest.raises(DataError, match="cannot read file"):
        restricted_load(tmp_path / "missing.pkl")


# --- prediction inputs ------------------------------------------------------------

def test_read_unlabeled_course_pickle(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "test.pkl"
    path.write_bytes(pickle.dumps({b"data": images, b"ids": np.arange(100, 105)}))
    got, ids = read_unlabeled(path)
    np.testing.assert_array_equal(got, images)
    assert ids.tolist() == [100, 101, 102, 103, 104] and ids.dtype == np.int64
    path.write_bytes(py2_pickle({"data": images, "ids": [f"x{i}" for i in range(5)]}))
    assert read_unlabeled(path)[1].tolist() == [f"x{i}" for i in range(5)]


@pytest.mark.parametrize(("data", "ids", "message"), [
    (np.zeros((5, 3072), np.uint8), list(range(5)), "N x 32 x 32 x 3"),
    (np.zeros((5, 3, 32, 32), np.uint8), list(range(5)), "N x 32 x 32 x 3"),
    (np.zeros((5, 32, 32, 3), np.float32), list(range(5)), "uint8"),
    (np.zeros((5, 32, 32, 3), np.uint8), list(range(4)), "4 ids for 5 images"),
    (np.zeros((2, 32, 32, 3), np.uint8), [1, 1], "duplicates"),
])
def test_read_unlabeled_refuses_bad_shapes_and_ids(tmp_path: Path, data: np.ndarray,
                                                   ids: list[int], message: str) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps({b"data": data, b"ids": ids}))
    with pytest.raises(DataError, match=message) as info:
        read_unlabeled(path)
    assert str(path) in str(info.value)


def test_read_unlabeled_image_folder_uses_file_stems(tmp_path: Path) -> None:
    write_image(tmp_path / "in" / "b.png", (1, 2, 3))
    write_image(tmp_path / "in" / "a.jpg", (200, 100, 50))
    images, ids = read_unlabeled(tmp_path / "in")
    assert ids.tolist() == ["a", "b"] and images.shape == (2, 32, 32, 3)
    assert tuple(images[1, 5, 5]) == (1, 2, 3)


# --- download ---------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_download_without_network_says_how_to_copy_by_hand(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/cifar-10-python.tar.gz"
    with pytest.raises(DataError, match="pass --data") as info:
        download_cifar10(tmp_path / "dl", url=url, timeout=5)
    assert url in str(info.value) and "\n" not in str(info.value)
    assert not any((tmp_path / "dl").iterdir())


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server for files in a folder: (base URL, folder)."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_md5_and_writes_atomically(tmp_path: Path,
                                                   http_folder: tuple[str, Path]) -> None:
    base, served = http_folder
    content = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk
    (served / "small.tar.gz").write_bytes(content)
    md5 = hashlib.md5(content).hexdigest()
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match=r"expected 0{32}; nothing was saved"):
        download_cifar10(dest, url=f"{base}/small.tar.gz", md5="0" * 32)
    assert list(dest.iterdir()) == []
    path = download_cifar10(dest, url=f"{base}/small.tar.gz", md5=md5)
    assert path == dest / "small.tar.gz" and path.read_bytes() == content
    assert [p.name for p in dest.iterdir()] == ["small.tar.gz"]
    with pytest.raises(DataError, match="download failed"):
        download_cifar10(dest, url=f"{base}/missing.tar.gz", md5=md5)


def test_atomic_writer_keeps_the_old_file_on_error_and_the_usual_mode(tmp_path: Path) -> None:
    from trainers.safeio import atomic_writer

    target = tmp_path / "out.csv"
    with atomic_writer(target) as f:
        f.write(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temp file left
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
