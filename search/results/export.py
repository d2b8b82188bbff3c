"""`search export`: a trained run's network as one TorchScript, ONNX or safetensors file.

The network exported is the one `search evaluate` evaluates (`trainers.inference.load_model`:
a run folder's ``model.pt``, or a checkpoint's EMA or raw weights), in eval mode, on the
CPU. Its input is float32 N x 3 x 32 x 32 (any N), RGB, normalised as
`trainers.augment.normalize` does, ``(pixel / 255 - MEAN) / STD`` per channel; its output
the logits, N x classes. The recipe's test-time augmentation (``tta_flip``,
``tta_translate``) is not part of the network; the metadata records it.

Nothing is written before the export is read back and checked on real test images of
the run's data set, spread over every class: TorchScript through ``torch.jit.load``, ONNX
through onnxruntime's CPU provider, safetensors by equal tensors and by the network
rebuilt from the file's own metadata. The largest absolute logit difference from
PyTorch's is printed; over the tolerance the command fails (exit code 2) and leaves
``--out`` as it was.

ONNX goes through torch's ``torch.export``-based exporter (``dynamo=True``, torch's
default since 2.9), which needs onnx and onnxscript; the TorchScript-based one
(``dynamo=False``) is deprecated and needs onnx too, so it would spare no package. onnx,
onnxscript, onnxruntime and safetensors are the optional extra ``export``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from search.args import UsageError, os_reason
from trainers import rundir

if TYPE_CHECKING:
    import torch
    from torch import nn

    from trainers.inference import LoadedModel

FORMATS = ("torchscript", "onnx", "safetensors")
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx", "safetensors": ".safetensors"}
NEEDS = {"torchscript": (), "onnx": ("onnx", "onnxscript", "onnxruntime"),
         "safetensors": ("safetensors",)}  # import names, each in the extra below
EXTRA = "pip install 'resnet-budget-search[export]'"
TOLERANCE = 1e-4  # largest absolute logit difference from PyTorch's that passes the check
CHECK_IMAGES = 100  # test images of the check, evenly spaced over the split (every class)
# The example batch traced or exported; checking on CHECK_IMAGES images shows that the
# batch size is free.
EXAMPLE_IMAGES = 2
INPUT = "float32 N x 3 x 32 x 32 (NCHW, RGB), each channel (pixel / 255 - mean) / std"
ONNX_INPUT, ONNX_OUTPUT = "images", "logits"
METADATA_FILE = "metadata.json"  # TorchScript: the metadata, an extra file in the archive

Writer = Callable[["nn.Module", "torch.Tensor", dict[str, str]], bytes]
# (file's bytes, the network, images, its logits, metadata) -> max abs logit difference;
# raises ExportMismatch when the file reads back other metadata or tensors.
Checker = Callable[[bytes, "nn.Module", "torch.Tensor", "torch.Tensor", dict[str, str]], float]


class ExportMismatch(UsageError):
    """The file read back is not what was exported."""


@dataclass(frozen=True)
class Export:
    """What `export_run` wrote, and how well the file reproduces the network."""

    format: str
    path: Path
    size: int  # bytes
    n_params: int
    max_diff: float  # largest absolute logit difference from PyTorch's, on `images`
    tolerance: float
    images: int  # test images of the check
    data_source: str
    checked_with: str  # what read the file back
    model: LoadedModel
    metadata: dict[str, str]


def check_available(fmt: str) -> None:
    """`UsageError` naming the first package ``fmt`` needs that cannot be imported."""
    for name in NEEDS[fmt]:
        try:
            importlib.import_module(name)
        except ImportError:
            raise UsageError(f"--format {fmt} needs the {name} package: {EXTRA}") from None


def export_run(run: str, fmt: str, out_file: str, out: TextIO, *, data: str | None = None,
               tolerance: float = TOLERANCE) -> Export:
    """Write the network of ``run`` to ``out_file`` as ``fmt``, once its check passes.

    Args:
        run: a run folder, its ``model.pt`` or a checkpoint.
        fmt: one of `FORMATS`.
        out_file: the file to write; missing folders above it are made.
        out: where progress goes.
        data: the data set whose test images check the export (default: the run's).
        tolerance: the largest absolute logit difference from PyTorch's that passes.

    Raises:
        UsageError: a bad format or tolerance, a missing package, an ``--out`` that
            cannot be written, or an export that fails its check.
        CheckpointError: ``run`` holds no loadable network.
        DataError: no data set to check with.
    """
    import numpy as np
    import torch

    from models import count_params
    from search.results.evaluate import default_data
    from trainers import load_cifar10
    from trainers.augment import normalize
    from trainers.inference import load_model
    from trainers.locate import find_data

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: must be one of {', '.join(FORMATS)}")
    if not tolerance > 0:  # also refuses nan
        raise UsageError(f"--tolerance must be a positive number, got {tolerance}")
    check_available(fmt)  # before the work
    target = Path(out_file).expanduser()
    if target.is_dir():
        raise UsageError(f"--out {out_file}: is a directory; name a file (such as "
                         f"{target / ('model' + SUFFIXES[fmt])})")
    _check_folder(target, out_file)
    loaded = load_model(Path(run).expanduser(), "cpu")
    _refuse_run_files(target, loaded.source, out_file)
    source = find_data(data or default_data(loaded.source))
    dataset = load_cifar10(source, progress=lambda m: print(f"data     {m}", file=out,
                                                             flush=True))
    if len(dataset.test_labels) == 0:
        raise UsageError(f"{source}: no test images to check the export with (--data)")
    picks = np.unique(np.linspace(0, len(dataset.test_labels) - 1, CHECK_IMAGES).round()
                      .astype(np.int64))
    images = normalize(torch.from_numpy(dataset.test_images[picks])).contiguous()
    with torch.no_grad():
        reference = loaded.model(images)
    metadata = export_metadata(loaded, dataset.classes)
    write, check, checked_with = _FORMATS[fmt]
    with _quiet():
        try:
            blob = write(loaded.model, images[:EXAMPLE_IMAGES], metadata)
            diff = check(blob, loaded.model, images, reference, metadata)
        except ExportMismatch as err:
            raise UsageError(f"--format {fmt}: {err}; {out_file} was not written") from None
        except Exception as err:  # the exporters raise many kinds, with pages of detail
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise UsageError(f"--format {fmt}: the export failed ({type(err).__name__}: "
                             f"{first[:300]}); {out_file} was not written") from None
    if not diff <= tolerance:  # nan fails too
        raise UsageError(f"--format {fmt}: the export's logits differ from PyTorch's by up to "
                         f"{diff:.3g} on {len(picks)} test images, over the tolerance "
                         f"{tolerance:g}; {out_file} was not written (--tolerance to accept)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        rundir.write_bytes(target, blob)
    except OSError as err:
        raise UsageError(f"--out {out_file}: cannot write it: {os_reason(err)}") from None
    return Export(fmt, target, len(blob), count_params(loaded.arch), diff, tolerance,
                  len(picks), dataset.source, checked_with, loaded, metadata)


def print_export(ex: Export, out: TextIO) -> None:
    meta = ex.metadata
    print(f"model    {ex.model.source}: {ex.model.arch.describe()}", file=out)
    print(f"check    {ex.images} test images of {ex.data_source}, read back with "
          f"{ex.checked_with}: max abs logit difference from PyTorch {ex.max_diff:.3g} "
          f"(tolerance {ex.tolerance:g})", file=out)
    print(f"input    {INPUT}, mean {meta['normalize_mean']}, std {meta['normalize_std']}; "
          f"output logits of {', '.join(json.loads(meta['classes']))}", file=out)
    print(f"written  {ex.path}: {ex.format}, {ex.size:,} bytes, {ex.n_params:,} parameters, "
          f"max abs difference {ex.max_diff:.3g}", file=out)


def export_metadata(loaded: LoadedModel, classes: tuple[str, ...]) -> dict[str, str]:
    """What a file needs to be used and rebuilt without this project's run folder: both
    configs, the size, the input's normalisation, the classes, where it came from.
    Every value is a string (JSON where it is not text), as safetensors and ONNX take."""
    import torch

    from models import count_params
    from search.results.ensemble import sha256_file
    from trainers.augment import MEAN, STD
    from trainers.checkpoint import code_version

    try:
        config = rundir.read_config(rundir.folder_of(loaded.source))
    except ValueError:  # a checkpoint copied out of its run folder: it carries the configs
        config = {}
    train = loaded.train
    now = code_version()
    meta = {
        "producer": "resnet-budget-search export",
        "arch": json.dumps(loaded.arch.to_dict(), sort_keys=True),
        "arch_summary": loaded.arch.describe(),
        "train": json.dumps(train.to_dict() if train else None, sort_keys=True),
        "n_params": str(count_params(loaded.arch)),
        "input": INPUT,
        "normalize_mean": json.dumps(list(MEAN)),
        "normalize_std": json.dumps(list(STD)),
        "classes": json.dumps(list(classes)),
        "output": f"float32 N x {len(classes)} logits, in the order of classes",
        # The recorded test accuracy averages the logits of these copies; the file does not.
        "test_time_augmentation": json.dumps(
            {"tta_flip": train.tta_flip, "tta_translate": train.tta_translate} if train
            else None),
        "code_version": str(config.get("code_version") or now),  # the code that trained it
        "export_code_version": now,
        "weights": str(loaded.source),
        "weights_sha256": sha256_file(loaded.source),
        "torch": torch.__version__,
    }
    for key in ("study", "trial", "seed", "data_source", "data_digest"):
        if config.get(key) is not None:
            meta[key] = str(config[key])
    return meta


def _check_folder(target: Path, given: str) -> None:
    """The folders above ``target`` are folders, or can be made (before the work)."""
    for folder in target.absolute().parents:
        if folder.exists():
            if not folder.is_dir():
                raise UsageError(f"--out {given}: {folder} is a file, not a directory")
            return


def _refuse_run_files(target: Path, source: Path, given: str) -> None:
    """An export must not overwrite the weights it reads, nor any file of the run."""
    folder = rundir.folder_of(source)
    own = {(folder / name).resolve() for name in (*rundir.OUTPUTS, *rundir.CHECKPOINTS)}
    if target.resolve() in own | {source.resolve()}:
        raise UsageError(f"--out {given}: is a file of the run itself; name another file")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' chatter off: torch.jit's deprecation notice, torch.onnx's notes on
    torchvision's operators (never used here) and on its own internals."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def _max_diff(logits: Any, reference: torch.Tensor) -> float:
    import torch

    got = torch.as_tensor(logits, dtype=torch.float32)
    if got.shape != reference.shape:
        raise ExportMismatch(f"the file gives logits of shape {tuple(got.shape)}, PyTorch "
                             f"{tuple(reference.shape)}")
    return float((got - reference).abs().max())


def _same_metadata(stored: Any, meta: dict[str, str]) -> None:
    if stored != meta:
        raise ExportMismatch("the file reads back other metadata than was written")


# -- TorchScript -------------------------------------------------------------------------


def _write_torchscript(model: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    import torch

    # Tracing, not scripting: it follows the eval-mode path of every block type, whose
    # training-only branches (drop path, shake) scripting would have to compile too.
    traced = torch.jit.trace(model, example, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(meta)})
    return buffer.getvalue()


def _check_torchscript(blob: bytes, model: nn.Module, images: torch.Tensor,
                       reference: torch.Tensor, meta: dict[str, str]) -> float:
    import torch

    extra: dict[str, Any] = {METADATA_FILE: ""}
    module = torch.jit.load(io.BytesIO(blob), map_location="cpu", _extra_files=extra)
    _same_metadata(json.loads(extra[METADATA_FILE]), meta)
    with torch.no_grad():
        return _max_diff(module.eval()(images), reference)


# -- ONNX --------------------------------------------------------------------------------


def _write_onnx(model: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    import torch

    program = torch.onnx.export(
        model, (example,), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
        dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    if program is None:  # only without dynamo=True
        raise RuntimeError("torch.onnx.export returned no program")
    program.model.metadata_props.update(meta)
    program.model.doc_string = f"{meta['arch_summary']}; input {INPUT}"
    return bytes(program.model_proto.SerializeToString())


def _check_onnx(blob: bytes, model: nn.Module, images: torch.Tensor, reference: torch.Tensor,
                meta: dict[str, str]) -> float:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    _same_metadata(session.get_modelmeta().custom_metadata_map, meta)
    (logits,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: images.numpy()})
    return _max_diff(logits, reference)


# -- safetensors -------------------------------------------------------------------------


def _write_safetensors(model: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    from safetensors.torch import save

    # Copies: safetensors refuses tensors that share memory or are not contiguous.
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in
             model.state_dict().items()}
    return bytes(save(state, metadata=meta))


def _check_safetensors(blob: bytes, model: nn.Module, images: torch.Tensor,
                       reference: torch.Tensor, meta: dict[str, str]) -> float:
    """The tensors equal the network's, and the network rebuilt from the file alone (its
    metadata's architecture, its tensors) gives the network's logits."""
    import torch
    from safetensors.torch import load

    from models import ArchConfig, build_model

    tensors = load(blob)
    # The format: an 8-byte little-endian header length, then the JSON header.
    size = int.from_bytes(blob[:8], "little")
    stored = json.loads(blob[8:8 + size]).get("__metadata__")
    _same_metadata(stored, meta)
    state = model.state_dict()
    if set(tensors) != set(state):
        raise ExportMismatch(f"the file holds {len(tensors)} tensors, the network {len(state)}")
    unequal = [k for k, v in state.items()
               if tensors[k].dtype != v.dtype or not torch.equal(tensors[k], v.cpu())]
    if unequal:
        raise ExportMismatch(f"tensor {unequal[0]} reads back changed")
    rebuilt = build_model(ArchConfig.from_dict(json.loads(stored["arch"])))
    rebuilt.load_state_dict(tensors)
    with torch.no_grad():
        return _max_diff(rebuilt.eval()(images), reference)


_FORMATS: dict[str, tuple[Writer, Checker, str]] = {
    "torchscript": (_write_torchscript, _check_torchscript, "torch.jit.load"),
    "onnx": (_write_onnx, _check_onnx, "onnxruntime (CPUExecutionProvider)"),
    "safetensors": (_write_safetensors, _check_safetensors,
                    "safetensors, the network rebuilt from its metadata"),
}
