"""CIFAR-10 from the forms people have it in, decoded once and cached.

`load_cifar10` accepts:

* the original python batches: a ``cifar-10-batches-py`` folder, or the
  ``cifar-10-python.tar.gz`` archive (md5-checked when it has exactly that name);
* an image-folder tree ``train/<class>/*.png|jpg|jpeg`` and ``test/<class>/*``, as a
  folder or a ``.tar``/``.tar.gz``/``.tgz`` (read in memory, never extracted).

Either may sit inside one wrapper folder. Decoded arrays are saved as an
uncompressed ``.npz`` named by the sha256 of the source's content, so 60,000 JPEGs
are decoded once per data set rather than once per trial. Pickles are read with the
restricted unpickler and archives are checked member by member (`trainers.safeio`).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from trainers.safeio import (
    DataError,
    PathLike,
    atomic_writer,
    restricted_load,
    restricted_loads,
    safe_members,
    tar_errors,
)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")  # CIFAR-10 label order (alphabetical)
IMAGE_SHAPE = (32, 32, 3)  # height, width, RGB channels
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
CACHE_VERSION = 1  # bump when decoding changes, so old cache files are not reused
CACHE_ENV = "SEARCH_CACHE"

_CHUNK = 1 << 20  # bytes read at a time when hashing or downloading
_PROGRESS_EVERY = 10_000  # images decoded between progress messages
_PIL_FORMATS = ("JPEG", "PNG")  # never let PIL guess among its other, rarer parsers

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous, so compare by identity
class CifarData:
    """CIFAR-10 in memory: uint8 images (N x 32 x 32 x 3, RGB) and int64 labels."""

    train_images: np.ndarray  # uint8, N x 32 x 32 x 3 (height, width, RGB)
    train_labels: np.ndarray  # int64, N, indices into classes
    test_images: np.ndarray  # uint8, M x 32 x 32 x 3
    test_labels: np.ndarray  # int64, M
    classes: tuple[str, ...] = CLASSES  # class names in label order
    source: str = ""  # the path the user gave
    digest: str = ""  # sha256 hex of the source's content; names the cache file

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        where = self.source or "CifarData"
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if not (isinstance(images, np.ndarray) and images.dtype == np.uint8
                    and images.shape[1:] == IMAGE_SHAPE and images.ndim == 4):
                raise DataError(where, f"{split}_images must be a uint8 N x 32 x 32 x 3 "
                                f"array, got {_describe(images)}")
            if not (isinstance(labels, np.ndarray) and labels.dtype == np.int64
                    and labels.shape == images.shape[:1]):
                raise DataError(where, f"{split}_labels must be an int64 array of "
                                f"{len(images)} labels, got {_describe(labels)}")
            if len(labels) and not 0 <= labels.min() <= labels.max() < len(self.classes):
                raise DataError(where, f"{split}_labels must be in 0..{len(self.classes) - 1}, "
                                f"got {labels.min()}..{labels.max()}")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def default_cache_dir() -> Path:
    """``$SEARCH_CACHE`` if set, else ``~/.cache/resnet-budget-search``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "resnet-budget-search"


def cache_file(digest: str, cache_dir: Path | None = None) -> Path:
    """Where `load_cifar10` keeps the decoded arrays of the source with sha256 ``digest``."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    return folder / f"cifar10-v{CACHE_VERSION}-{digest}.npz"


def load_cifar10(source: PathLike, *, cache_dir: Path | None = None,
                 progress: Progress | None = None) -> CifarData:
    """Load CIFAR-10 from python batches or an image-folder tree (folder or tar).

    Args:
        source: a folder or archive in one of the forms in the module docstring.
        cache_dir: where decoded arrays are kept (default: `default_cache_dir`).
        progress: called with short messages during long work (hashing, decoding).

    Returns:
        The data with ``source`` as given and ``digest`` the sha256 of its content.

    Raises:
        DataError: the path is missing, in no known form, damaged, unsafe, or holds
            the wrong classes or image sizes; the message names the path.
    """
    say = progress or _quiet
    path = Path(source).expanduser()
    if path.is_dir():
        layout, blobs, digest = _read_folder(path, say)
    elif path.is_file():
        layout, blobs, digest = None, {}, _hash_archive(path, say)
    else:
        raise DataError(path, "not a file or folder" if path.exists() else
                        "no such file or directory")

    cached = cache_file(digest, cache_dir)
    data = _load_cache(cached, str(source), digest, say)
    if data is not None:
        return data
    if layout is None:
        layout, blobs = _read_archive(path, say)
    arrays = _decode(layout, blobs, path, say)
    data = CifarData(*arrays, classes=CLASSES, source=str(source), digest=digest)
    _save_cache(cached, data, say)
    return data


# --- what a source holds ----------------------------------------------------------

Parts = tuple[str, ...]  # a relative path split at "/"; plain strings, as pathlib is slow


def _parts(name: str) -> Parts:
    return tuple(part for part in name.split("/") if part not in ("", "."))


def _join(where: Path, *parts: str) -> str:
    """``where/part/...`` for messages; a tar's members are named as if it were a folder."""
    return "/".join((str(where), *parts))


@dataclass(frozen=True)
class _Layout:
    """The files of a source that `load_cifar10` reads, as paths relative to it."""

    kind: str  # "batches" (python pickles) or "folder" (image files)
    files: tuple[Parts, ...]  # batches: 5 train, test, [meta]; folder: train, then test
    labels: tuple[int, ...] = ()  # folder: label of each file
    n_train: int = 0  # folder: files[:n_train] are training images


def _visible(parts: Parts) -> bool:
    # Skips .DS_Store, macOS "._x.jpg" shadows, __MACOSX/ and the like.
    return not any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _find_layout(files: list[Parts], where: Path) -> _Layout:
    """Recognize the layout at the top of ``files`` or inside one wrapper folder."""
    root: Parts = ()
    for _ in range(2):
        inside = [f[len(root):] for f in files if f[:len(root)] == root]
        names = {f[0] for f in inside if len(f) == 1}
        folders = {f[0] for f in inside if len(f) > 1}
        batches = (*TRAIN_BATCHES, TEST_BATCH)
        if names & set(batches):
            missing = [b for b in batches if b not in names]
            if missing:
                raise DataError(_join(where, *root), f"missing {', '.join(missing)} (CIFAR-10 "
                                "python batches are data_batch_1..5 and test_batch)")
            extra = (META_FILE,) if META_FILE in names else ()
            return _Layout("batches", tuple((*root, b) for b in (*batches, *extra)))
        if folders & {"train", "test"}:
            return _folder_layout(inside, root, where)
        if len(folders) != 1:
            break
        root = (*root, folders.pop())
    raise DataError(where, "holds neither CIFAR-10 python batches (data_batch_1..5, test_batch) "
                    "nor an image-folder tree (train/<class>/*.png, test/<class>/*.png)")


def _folder_layout(files: list[Parts], root: Parts, where: Path) -> _Layout:
    label_of = {name: label for label, name in enumerate(CLASSES)}
    found: dict[str, list[tuple[int, str, Parts]]] = {"train": [], "test": []}
    for f in files:
        if f[0] not in found:
            continue  # a README or licence beside train/ and test/
        if len(f) != 3:
            raise DataError(_join(where, *root, *f), "unexpected file: images belong in "
                            "train/<class>/ or test/<class>/")
        split, name, file = f
        if name not in label_of:
            raise DataError(_join(where, *root, split, name), "unknown class folder; expected "
                            f"exactly {', '.join(CLASSES)}")
        if os.path.splitext(file)[1].lower() not in IMAGE_SUFFIXES:
            raise DataError(_join(where, *root, *f),
                            "not an image: only .jpg, .jpeg and .png are read")
        found[split].append((label_of[name], file, (*root, *f)))
    for split, items in found.items():
        present = {label for label, _, _ in items}
        missing = [c for i, c in enumerate(CLASSES) if i not in present]
        if len(missing) == len(CLASSES):
            raise DataError(_join(where, *root, split),
                            "no images (expected <class>/*.png or *.jpg)")
        if missing:
            raise DataError(_join(where, *root, split), f"no images for {', '.join(missing)}")
    ordered = sorted(found["train"]) + sorted(found["test"])  # by label, then file name
    return _Layout("folder", tuple(f for _, _, f in ordered),
                   labels=tuple(label for label, _, _ in ordered), n_train=len(found["train"]))


def _read_folder(path: Path, say: Progress) -> tuple[_Layout, dict[Parts, bytes], str]:
    """Layout, content and digest of a folder source (sha256 over paths and contents)."""
    say(f"reading {path}")
    files: list[Parts] = []
    for dirpath, dirnames, filenames in os.walk(path):
        rel = Path(dirpath).relative_to(path).parts
        dirnames[:] = sorted(d for d in dirnames if _visible((d,)))
        files.extend((*rel, name) for name in filenames if _visible((name,)))
    layout = _find_layout(files, path)
    digest = hashlib.sha256()
    blobs = {}
    for rel in sorted(layout.files):
        if not path.joinpath(*rel).is_file():  # a fifo or device would block or never end
            raise DataError(_join(path, *rel), "not a regular file")
        try:
            blob = path.joinpath(*rel).read_bytes()
        except OSError as err:
            raise DataError(_join(path, *rel), f"cannot read file ({err.strerror or err})") from err
        # Length-prefixed, so no two different trees hash the same byte stream.
        digest.update(f"{'/'.join(rel)}\0{len(blob)}\0".encode())
        digest.update(blob)
        blobs[rel] = blob
    return layout, blobs, digest.hexdigest()


def _hash_archive(path: Path, say: Progress) -> str:
    """sha256 of a file; for the official archive, also check its md5 in the same pass."""
    say(f"hashing {path}")
    sha, md5 = _hash_file(path)
    if path.name == CIFAR10_ARCHIVE and md5 != CIFAR10_MD5:
        raise DataError(path, f"md5 is {md5}, expected {CIFAR10_MD5} for {CIFAR10_ARCHIVE}: "
                        "the download is incomplete or damaged; fetch it again")
    return sha


def _hash_file(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    try:
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                sha.update(chunk)
                md5.update(chunk)
    except OSError as err:
        raise DataError(path, f"cannot read file ({err.strerror or err})") from err
    return sha.hexdigest(), md5.hexdigest()


def _read_archive(path: Path, say: Progress) -> tuple[_Layout, dict[Parts, bytes]]:
    """Layout and member contents of a tar source, read in memory after checking members."""
    say(f"reading {path}")
    with tar_errors(path):
        try:
            tar = tarfile.open(path, "r:*")
        except tarfile.ReadError:
            raise DataError(path, "not a folder or a tar archive (.tar, .tar.gz, .tgz) of "
                            "CIFAR-10 python batches or train/<class>/ and test/<class>/ "
                            "images") from None
        with tar:
            members = safe_members(tar, path)
            chosen = {}  # a later member of the same name wins, as in extraction
            for member in members:
                name = _parts(member.name)
                if member.isfile() and name and _visible(name):
                    chosen[name] = member
            layout = _find_layout(list(chosen), path)
            wanted = {id(chosen[f]): f for f in layout.files}
            blobs = {}
            # In archive order: a compressed tar only seeks forward cheaply.
            for member in members:
                if id(member) in wanted:
                    file = tar.extractfile(member)
                    assert file is not None  # regular files always have content
                    blobs[wanted[id(member)]] = file.read()
    return layout, blobs


# --- decoding ---------------------------------------------------------------------

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _decode(layout: _Layout, blobs: dict[Parts, bytes], where: Path,
            say: Progress) -> Arrays:
    if layout.kind == "batches":
        return _decode_batches(layout, blobs, where, say)
    start = time.perf_counter()
    n = len(layout.files)
    say(f"decoding {n:,} images from {where}")
    images = np.empty((n, *IMAGE_SHAPE), np.uint8)
    for i, rel in enumerate(layout.files):
        images[i] = decode_image(blobs[rel], _join(where, *rel))
        if (i + 1) % _PROGRESS_EVERY == 0 and i + 1 < n:
            say(f"decoded {i + 1:,} of {n:,} images")
    say(f"decoded {n:,} images in {time.perf_counter() - start:.1f} s")
    labels = np.asarray(layout.labels, np.int64)
    k = layout.n_train
    return images[:k], labels[:k], images[k:], labels[k:]


def decode_image(blob: bytes, where: PathLike) -> np.ndarray:
    """A 32x32 JPEG or PNG file's content as a uint8 32 x 32 x 3 RGB array.

    Raises:
        DataError: not a readable JPEG/PNG, or not 32x32 pixels.
    """
    try:
        with Image.open(io.BytesIO(blob), formats=_PIL_FORMATS) as img:
            if img.size != (IMAGE_SHAPE[1], IMAGE_SHAPE[0]):  # (width, height), from the header
                raise DataError(where, f"image is {img.size[0]}x{img.size[1]} pixels, "
                                "expected 32x32")
            return np.asarray(img.convert("RGB"))
    except DataError:
        raise
    except Exception as err:  # PIL raises OSError, ValueError, SyntaxError, ...
        raise DataError(where, f"cannot decode image ({type(err).__name__}: {err})") from err


def _decode_batches(layout: _Layout, blobs: dict[Parts, bytes], where: Path,
                    say: Progress) -> Arrays:
    say(f"reading CIFAR-10 python batches from {where}")
    parts = [_read_batch(blobs[rel], _join(where, *rel)) for rel in layout.files[:6]]
    if len(layout.files) > 6:
        _check_meta(blobs[layout.files[6]], _join(where, *layout.files[6]))
    train_images = np.concatenate([images for images, _ in parts[:5]])
    train_labels = np.concatenate([labels for _, labels in parts[:5]])
    return train_images, train_labels, *parts[5]


def _entry(obj: Any, key: str, where: PathLike) -> Any:
    """``obj[b"key"]`` (Python 2 pickles read as bytes) or ``obj["key"]``."""
    if not isinstance(obj, dict):
        raise DataError(where, f"expected a pickled dict, got {type(obj).__name__}")
    for k in (key.encode(), key):
        if k in obj:
            return obj[k]
    raise DataError(where, f"has no {key!r} entry (keys: {sorted(map(str, obj))})")


def _read_batch(blob: bytes, where: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One python batch: N x 3072 uint8 rows (R, G, B planes of 32x32) and N labels."""
    batch = restricted_loads(blob, what=str(where))
    data = _entry(batch, "data", where)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        raise DataError(where, f"'data' must be a uint8 N x 3072 array, got {_describe(data)}")
    labels = _labels(_entry(batch, "labels", where), len(data), where)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _labels(raw: Any, n: int, where: PathLike) -> np.ndarray:
    try:
        labels = np.asarray(raw)
    except Exception as err:  # ragged or exotic objects
        raise DataError(where, f"'labels' is not a list of integers ({err})") from err
    if labels.dtype.kind not in "iu" or labels.shape != (n,):
        raise DataError(where, f"'labels' must be {n} integers, got {_describe(labels)}")
    if n and not 0 <= labels.min() <= labels.max() < len(CLASSES):
        raise DataError(where, f"'labels' must be in 0..{len(CLASSES) - 1}, "
                        f"got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _check_meta(blob: bytes, where: PathLike) -> None:
    names = _entry(restricted_loads(blob, what=str(where)), "label_names", where)
    if not isinstance(names, (list, tuple)):
        raise DataError(where, f"'label_names' must be a list, got {type(names).__name__}")
    decoded = tuple(_texts(names, where, "'label_names'"))
    if decoded != CLASSES:
        raise DataError(where, f"label_names are {list(decoded)}, expected {list(CLASSES)}")


# --- cache ------------------------------------------------------------------------

_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def _load_cache(path: Path, source: str, digest: str, say: Progress) -> CifarData | None:
    """The cached arrays, or None if there are none or they cannot be used."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["digest"]) != digest:
                raise ValueError(f"it holds digest {npz['digest']}")
            arrays = {name: npz[name] for name in _ARRAYS}
            classes = tuple(str(c) for c in npz["classes"])
        data = CifarData(**arrays, classes=classes, source=source, digest=digest)
    except Exception as err:  # a damaged zip raises BadZipFile, OSError, KeyError, ...
        say(f"ignoring unusable cache file {path} ({type(err).__name__}: {err}); decoding again")
        return None
    say(f"loaded {source} from cache {path}")
    return data


def _save_cache(path: Path, data: CifarData, say: Progress) -> None:
    """Write the cache; failing to (read-only or full disk) costs speed, not the run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as file:
            np.savez(file, **{name: getattr(data, name) for name in _ARRAYS},
                     classes=np.array(data.classes), digest=np.array(data.digest))
    except OSError as err:
        say(f"could not write cache file {path} ({err.strerror or err}); continuing without")
        return
    say(f"cached decoded data at {path}")


def read_unlabeled(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images to predict: a course-style pickle or a folder of 32x32 images.

    The pickle is a dict with ``b"data"`` (uint8, N x 32 x 32 x 3, RGB) and
    ``b"ids"`` (N ids); a folder's images are read in file-name order with their
    file stems as ids.

    Returns:
        ``(images, ids)``: uint8 N x 32 x 32 x 3, and N unique ids (int64 or str).

    Raises:
        DataError: a missing path, a bad pickle, wrong shapes or dtypes, an id count
            that differs from the image count, duplicate ids, unreadable images.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _visible((p.name,)))
        for p in files:
            if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
                raise DataError(p, "not an image: only .jpg, .jpeg and .png are read")
        if not files:
            raise DataError(path, "holds no .jpg, .jpeg or .png images")
        images = np.stack([decode_image(_read_bytes(p), p) for p in files])
        ids: Any = [p.stem for p in files]
    elif path.is_file():
        obj = restricted_load(path)
        images, ids = _entry(obj, "data", path), _entry(obj, "ids", path)
    else:
        raise DataError(path, "not a file or folder" if path.exists() else
                        "no such file or directory")
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[1:] == IMAGE_SHAPE and len(images)):
        raise DataError(path, f"images must be a non-empty uint8 N x 32 x 32 x 3 array, "
                        f"got {_describe(images)}")
    return images, _ids(ids, len(images), path)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read file ({err.strerror or err})") from err


def _ids(raw: Any, n: int, where: PathLike) -> np.ndarray:
    if isinstance(raw, np.ndarray):
        raw = raw.tolist()
    if not isinstance(raw, (list, tuple)):
        raise DataError(where, f"'ids' must be a list, got {type(raw).__name__}")
    items = _texts(raw, where, "'ids'")
    if len(items) != n:
        raise DataError(where, f"has {len(items)} ids for {n} images")
    try:
        ids = np.asarray(items)
    except ValueError as err:  # ragged lists
        raise DataError(where, f"'ids' must be integers or strings ({err})") from None
    if ids.ndim != 1 or ids.dtype.kind not in "iuU":
        raise DataError(where, f"'ids' must be integers or strings, got {_describe(ids)}")
    if ids.dtype.kind == "u" and (ids > np.iinfo(np.int64).max).any():  # would wrap around
        raise DataError(where, "'ids' must be integers below 2**63")
    if len(np.unique(ids)) != n:
        raise DataError(where, "'ids' holds duplicates")
    return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids


def _texts(items: Iterable[Any], where: PathLike, what: str) -> list[Any]:
    """``items`` with bytes decoded as UTF-8 (Python 2 pickles hold text as bytes)."""
    try:
        return [i.decode() if isinstance(i, bytes) else i for i in items]
    except UnicodeDecodeError as err:
        raise DataError(where, f"{what} holds bytes that are not UTF-8 text ({err})") from None


def download_cifar10(dest_dir: Path, *, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5,
                     timeout: float = 60.0, progress: Progress | None = None) -> Path:
    """Download the CIFAR-10 python archive into ``dest_dir`` and check its md5.

    A file already there with the right md5 is kept as it is.

    Args:
        dest_dir: folder for the archive (created if missing).
        url: where to fetch it; the file keeps the URL's last path component as name.
        md5: expected md5 hex digest of the file.
        timeout: seconds to wait for the server to connect or send.
        progress: called with short messages.

    Returns:
        The path of the checked archive.

    Raises:
        DataError: no network, a server error, or a wrong md5; the message says how
            to copy the file by hand instead.
    """
    say = progress or _quiet
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or CIFAR10_ARCHIVE
    target = Path(dest_dir).expanduser() / name
    if target.is_file() and _hash_file(target)[1] == md5:
        say(f"{target} is already downloaded")
        return target
    advice = (f"copy {CIFAR10_ARCHIVE} (from {CIFAR10_URL}) from a machine with internet "
              "access and pass --data PATH")
    say(f"downloading {url}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.md5(usedforsecurity=False)
        with urllib.request.urlopen(url, timeout=timeout) as response, \
                atomic_writer(target) as out:
            for chunk in _chunks(response):
                digest.update(chunk)
                out.write(chunk)
            if digest.hexdigest() != md5:  # raising here discards the temporary file
                raise DataError(url, f"downloaded file has md5 {digest.hexdigest()}, expected "
                                f"{md5}; nothing was saved; {advice}")
    except DataError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise DataError(url, f"download failed ({reason}); {advice}") from err
    say(f"saved {target}")
    return target


def _chunks(response: Any) -> Iterable[bytes]:
    while chunk := response.read(_CHUNK):
        yield chunk
