"""Reading files we did not write: restricted unpickling, tar member checks, atomic writes.

Data sets arrive as pickles and tar archives from the internet or from colleagues.
``pickle.load`` calls whatever a pickle names and ``tarfile.extractall`` writes
wherever a member's name points, so the project uses neither bare. Every problem
with such a file is a `DataError` with a one-line message naming the path, which the
command line prints before exiting with status 2.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import functools
import io
import os
import pickle
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

PathLike = str | os.PathLike[str]
_DRIVE = re.compile(r"[A-Za-z]:")  # "C:evil" or "C:/evil" lands outside the folder on Windows


class DataError(ValueError):
    """A data set, input file, archive or download the user must fix.

    The message is one line, ``"<path>: <problem>"``.

    Attributes:
        path: the file, directory, archive member or URL at fault.
        problem: what is wrong with it.
    """

    def __init__(self, path: PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(problem.split())  # one line, whatever a library said
        # An archive member's name may hold line breaks too.
        super().__init__(f"{' '.join(self.path.splitlines())}: {self.problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses process boundaries (Ray workers) with both fields intact.
        return (type(self), (self.path, self.problem))


# What a pickle of containers, bytes, numbers and numpy arrays may name. The numpy
# functions are taken from numpy's own reductions rather than imported by module
# name: pickles written by numpy 1.x (and the Python 2 CIFAR-10 batches) say
# ``numpy.core.multiarray``, numpy 2.x says ``numpy._core.multiarray``, and both must
# map to whatever the installed numpy uses, without numpy.core's deprecation warning.
_RECONSTRUCT: Any = np.zeros(1).__reduce__()[0]  # protocols 0-4: ndarray via _reconstruct
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5: ndarray via _frombuffer
_SCALAR = np.float32(0).__reduce__()[0]  # numpy scalars such as np.int64(3)


# A few bytes of pickle must not stand for gigabytes: numpy.ndarray(shape) and
# bytearray(n) allocate whatever size they are given, so neither may be called as such.
class _NdarrayName:
    """What ``numpy.ndarray`` names in a pickle: the class `_empty_array` rebuilds, not a call."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("a pickle may not call numpy.ndarray")


def _empty_array(subtype: Any, shape: Any, dtype: Any) -> Any:
    """numpy's ``_reconstruct``: numpy pickles ask it for an empty array to fill.

    The data follow in ``__setstate__``, which checks their size against the shape.
    """
    if subtype is not _NdarrayName or shape != (0,):
        raise ValueError(f"array pickles start from an empty ndarray, got shape {shape!r}")
    return _RECONSTRUCT(np.ndarray, shape, dtype)


def _bytearray(*args: Any) -> bytearray:
    """``bytearray(data[, encoding])`` as pickles use it, never ``bytearray(size)``."""
    if args and not isinstance(args[0], (bytes, str)):
        raise ValueError(f"bytearray of a {type(args[0]).__name__}: only of bytes or text")
    return bytearray(*args)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NdarrayName,
    ("numpy", "dtype"): np.dtype,
    # Protocol 2 pickles of bytes written by Python 3: _codecs.encode(text, "latin1").
    ("_codecs", "encode"): codecs.encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _empty_array
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _SCALAR
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _FROMBUFFER
# Types without opcodes of their own in older protocols; "__builtin__" is Python 2's name.
for _module in ("builtins", "__builtin__"):
    for _type in (set, frozenset, complex):
        _ALLOWED[(_module, _type.__name__)] = _type
    _ALLOWED[(_module, "bytearray")] = _bytearray


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], *, what: str, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(self._what, f"refusing to unpickle {module}.{name}: only "
                            "containers, numbers, bytes and numpy arrays are allowed") from None


def restricted_loads(data: bytes, *, what: str, encoding: str = "bytes") -> object:
    """Unpickle ``data`` allowing only containers, strings, bytes, numbers and numpy arrays.

    Args:
        data: the pickle.
        what: names the data in error messages, usually its path.
        encoding: how Python 2 ``str`` objects are decoded. ``"bytes"`` keeps them as
            bytes, which is what the CIFAR-10 python batches need (their dict keys
            become ``b"data"``, ``b"labels"``).

    Raises:
        DataError: the pickle names anything else (the message says which
            ``module.name``), or it is truncated or not a pickle at all.
    """
    unpickler = _RestrictedUnpickler(io.BytesIO(data), what=what, encoding=encoding)
    try:
        return unpickler.load()
    except DataError:
        raise
    except Exception as err:  # truncated or garbage input raises almost anything
        raise DataError(what, f"not a readable pickle ({type(err).__name__}: {err})") from err


def restricted_load(path: PathLike, *, encoding: str = "bytes") -> object:
    """`restricted_loads` of a file's content; a missing or unreadable file is a DataError."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read file ({err.strerror or err})") from err
    return restricted_loads(data, what=str(path), encoding=encoding)


@contextlib.contextmanager
def tar_errors(where: PathLike) -> Iterator[None]:
    """Turn what tarfile, gzip and the file system raise into a DataError naming ``where``."""
    try:
        yield
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise DataError(where, f"cannot read archive ({reason})") from err


def check_member(member: tarfile.TarInfo, where: PathLike) -> None:
    """Refuse a tar member that could write outside the folder it is extracted into.

    Only regular files and directories with relative paths free of ``..`` pass: no
    absolute paths, no links of any kind, no devices or fifos.

    Raises:
        DataError: naming the archive, the member and the problem.
    """
    name = member.name
    parts = name.replace("\\", "/").split("/")  # plain strings: pathlib is slow per member
    problem = None
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        problem = "has an absolute path"
    elif ".." in parts:
        problem = "has a '..' component"
    elif member.issym() or member.islnk():
        problem = f"is a link to {member.linkname!r} (links are not allowed in data archives)"
    elif not (member.isfile() or member.isdir()):
        problem = "is a device, fifo or other special file"
    if problem is not None:
        raise DataError(where, f"unsafe archive member {name!r} {problem}")


def safe_members(tar: tarfile.TarFile, where: PathLike) -> list[tarfile.TarInfo]:
    """Every member of ``tar``, after checking each with `check_member`.

    Reads the whole archive index; nothing is extracted.

    Raises:
        DataError: an unsafe member, or an unreadable archive.
    """
    with tar_errors(where):
        members = tar.getmembers()
    for member in members:
        check_member(member, where)
    return members


def safe_extract(tar_path: PathLike, target: PathLike) -> Path:
    """Extract an archive into ``target`` after checking every member.

    Members are checked with `safe_members`, then each resolved destination must
    lie under the resolved ``target`` (a symlink already inside ``target`` could
    otherwise redirect a write). Where tarfile has extraction filters, the "data"
    filter is applied as well.

    Returns:
        The resolved target directory.

    Raises:
        DataError: an unsafe member or an unreadable archive; nothing is extracted.
    """
    target = Path(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(target, f"cannot create folder ({err.strerror or err})") from err
    root = target.resolve()
    with tar_errors(tar_path), tarfile.open(tar_path, "r:*") as tar:
        members = safe_members(tar, tar_path)
        for member in members:
            if not (root / member.name).resolve().is_relative_to(root):
                raise DataError(tar_path, f"archive member {member.name!r} would be "
                                f"written outside {root}")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, members=members, filter="data")
        else:  # Python without extraction filters (before 3.10.12 / 3.11.4)
            tar.extractall(root, members=members)
    return root


@functools.cache
def _umask() -> int:
    """The process's umask (read once: reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: PathLike) -> Iterator[IO[bytes]]:
    """A binary file that appears at ``path`` complete or not at all.

    Writes go to a temporary file in the same directory, which is fsynced and
    moved over ``path`` with `os.replace` when the block ends without an error; on
    an error it is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
