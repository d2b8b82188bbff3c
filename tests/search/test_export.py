"""`search export`: a small network trained for an epoch, written as a run folder the way
`search promote` writes one, exported in each format and read back here, independently of
the command's own check, against the network's logits on real test images."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import ArchConfig, StageConfig, build_model, count_params
from search.cli import main
from search.results import export
from tests.search.test_promote import one_line_error
from trainers import CifarData, TrainConfig, fit, rundir
from trainers.augment import MEAN, STD, normalize
from trainers.checkpoint import code_version
from trainers.inference import save_model

pytestmark = [
    pytest.mark.usefixtures("shared_archive"),  # skips, or fails in CI, without it
    # torch 2.13 deprecates TorchScript; the format is still what many runtimes load.
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
]
FORMATS = ("torchscript", "onnx", "safetensors")
TOLERANCE = 1e-4
EXTRA = "pip install 'resnet-budget-search[export]'"


@pytest.fixture(autouse=True)
def data_cache(cifar_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's decoded archive (`cifar_jpeg` fills it), and the run's own data."""
    monkeypatch.setenv("SEARCH_CACHE", str(cifar_cache))
    monkeypatch.delenv("SEARCH_DATA", raising=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, cifar_jpeg: CifarData) -> Path:
    """A run folder as `search promote` leaves it (config.json, model.pt): 20k parameters
    trained for one epoch on 1,000 images."""
    arch = ArchConfig(stages=(StageConfig(1, 16), StageConfig(1, 32, stride=2)), stem_width=16)
    cfg = TrainConfig(epochs=1, batch_size=100, lr=0.1, warmup_epochs=0.0, train_subset=1000,
                      val_size=0, seed=0)
    result = fit(arch, cfg, cifar_jpeg, device="cpu", deterministic=True, log=lambda _: None)
    folder = tmp_path_factory.mktemp("export") / "trial-0"
    folder.mkdir()
    rundir.write_config(folder, {
        "study": "tiny", "trial": 0, "arch": arch.to_dict(), "train": cfg.to_dict(),
        "seed": cfg.seed, "code_version": code_version(), "data_source": cifar_jpeg.source,
        "data_digest": cifar_jpeg.digest, "device": "cpu", "torch": torch.__version__})
    save_model(result.model, folder / rundir.MODEL)
    return folder


@pytest.fixture(scope="module")
def network(run: Path) -> torch.nn.Module:
    """The run's network, loaded here from its own files."""
    config = json.loads((run / "config.json").read_text())
    model = build_model(ArchConfig.from_dict(config["arch"]))
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def images(cifar_jpeg: CifarData) -> torch.Tensor:
    """103 test images of every class (not the command's own 100), normalised."""
    return normalize(torch.from_numpy(cifar_jpeg.test_images[::97])).contiguous()


@pytest.fixture(scope="module")
def logits(network: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """PyTorch's logits; also the precondition that they tell the images apart."""
    with torch.no_grad():
        out = network(images).numpy()
    classes = np.bincount(out.argmax(1), minlength=10)
    assert (classes > 0).sum() >= 3, f"the network predicts too few classes: {classes}"
    assert out.std(axis=0).mean() > 0.05, out.std(axis=0)
    return out


@pytest.fixture(scope="module")
def files(run: Path, cifar_cache: Path,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Each format written by the command (into folders that do not exist yet), and what
    it printed; the check's images come from the run's own data set."""
    written = {}
    root = tmp_path_factory.mktemp("exports")
    for fmt in FORMATS:
        target = root / fmt / "deeper" / f"net.{fmt}"
        printed = io.StringIO()
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
            mp.setenv("SEARCH_CACHE", str(cifar_cache))
            mp.delenv("SEARCH_DATA", raising=False)
            code = main(["export", str(run), "--format", fmt, "--out", str(target)])
        assert code == 0, printed.getvalue()
        written[fmt] = target, printed.getvalue()
    return written


@pytest.fixture(params=FORMATS)
def exported(request: pytest.FixtureRequest,
             files: dict[str, tuple[Path, str]]) -> tuple[str, Path, str]:
    return (request.param, *files[request.param])


def read_back(fmt: str, path: Path, images: torch.Tensor) -> tuple[np.ndarray, dict[str, str]]:
    """The file's logits for ``images`` and its metadata, read with the format's own tools."""
    if fmt == "torchscript":
        extra = {"metadata.json": ""}
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        with torch.no_grad():
            return module(images).numpy(), json.loads(extra["metadata.json"])
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["images"]
        (out,) = session.run(["logits"], {"images": images.numpy()})
        return out, dict(session.get_modelmeta().custom_metadata_map)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    model = build_model(ArchConfig.from_dict(json.loads(meta["arch"])))
    model.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        return model.eval()(images).numpy(), meta


def test_each_format_gives_the_networks_logits(exported: tuple[str, Path, str],
                                                images: torch.Tensor,
                                                logits: np.ndarray) -> None:
    fmt, path, printed = exported
    got, _ = read_back(fmt, path, images)
    assert got.shape == logits.shape
    assert np.abs(got - logits).max() <= TOLERANCE
    assert (got.argmax(1) == logits.argmax(1)).all()
    # The printed check is the same measure, within the tolerance.
    measured = re.search(r"max abs logit difference from PyTorch (\S+) ", printed)
    assert measured and float(measured.group(1)) <= TOLERANCE, printed
    written = [line for line in printed.splitlines() if line.startswith("written")]
    assert written == [f"written  {path}: {fmt}, {path.stat().st_size:,} bytes, 19,994 "
                       f"parameters, max abs difference {measured.group(1)}"], printed


@pytest.mark.parametrize("batch", [1, 7])
def test_each_format_takes_any_batch_size(exported: tuple[str, Path, str],
                                           images: torch.Tensor, logits: np.ndarray,
                                           batch: int) -> None:
    fmt, path, _ = exported
    got, _ = read_back(fmt, path, images[:batch])
    assert np.abs(got - logits[:batch]).max() <= TOLERANCE


def test_safetensors_holds_the_weights_unchanged(files: dict[str, tuple[Path, str]],
                                                 run: Path) -> None:
    from safetensors.torch import load_file

    path, _ = files["safetensors"]
    stored, original = load_file(str(path)), torch.load(run / "model.pt", weights_only=True)
    assert stored.keys() == original.keys()
    for name, tensor in original.items():
        assert stored[name].dtype == tensor.dtype and torch.equal(stored[name], tensor), name


def test_the_metadata_describes_the_network(exported: tuple[str, Path, str], run: Path,
                                            images: torch.Tensor) -> None:
    fmt, path, _ = exported
    _, meta = read_back(fmt, path, images[:1])
    config = json.loads((run / "config.json").read_text())
    assert all(isinstance(v, str) for v in meta.values())
    assert json.loads(meta["arch"]) == config["arch"]
    assert json.loads(meta["train"]) == config["train"]
    arch = ArchConfig.from_dict(config["arch"])
    assert int(meta["n_params"]) == count_params(arch) == 19_994
    assert json.loads(meta["normalize_mean"]) == list(MEAN)
    assert json.loads(meta["normalize_std"]) == list(STD)
    assert json.loads(meta["classes"])[:2] == ["airplane", "automobile"]
    assert len(json.loads(meta["classes"])) == 10
    assert meta["code_version"] == config["code_version"]
    assert "N x 3 x 32 x 32" in meta["input"] and "255" in meta["input"]
    assert json.loads(meta["test_time_augmentation"]) == {"tta_flip": True, "tta_translate": 0}
    assert meta["data_digest"] == config["data_digest"]


@pytest.mark.parametrize(("fmt", "package"), [("onnx", "onnxruntime"), ("onnx", "onnxscript"),
                                              ("onnx", "onnx"), ("safetensors", "safetensors")])
def test_a_missing_package_is_named_with_the_extra(fmt: str, package: str, run: Path,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now fails
    target = tmp_path / "net.out"
    one_line_error(main(["export", str(run), "--format", fmt, "--out", str(target)]), capsys,
                   f"the {package} package", EXTRA)
    assert not target.exists()


def test_a_wrong_export_fails_its_check_and_writes_nothing(
        run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    write, check, name = export._FORMATS["torchscript"]

    def off_by_a_little(model: torch.nn.Module, example: torch.Tensor,
                        meta: dict[str, str]) -> bytes:
        other = copy.deepcopy(model)
        head = [m for m in other.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            head.bias[3] += 1e-3
        return write(other, example, meta)

    monkeypatch.setitem(export._FORMATS, "torchscript", (off_by_a_little, check, name))
    target = tmp_path / "net.pt"
    one_line_error(main(["export", str(run), "--format", "torchscript", "--out", str(target)]),
                   capsys, "differ from PyTorch's by up to 0.001", "was not written")
    assert not target.exists()


def test_bad_input_exits_2_with_one_line(run: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "net.onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(main(["export", str(empty), "--format", "onnx", "--out", out]), capsys,
                   "holds neither model.pt nor checkpoint.pt")
    one_line_error(main(["export", str(tmp_path / "nothing"), "--format", "onnx", "--out", out]),
                   capsys, "no such file or directory")
    one_line_error(main(["export", str(run), "--format", "onnx", "--out", str(tmp_path)]),
                   capsys, "is a directory")
    (tmp_path / "file").write_text("")
    one_line_error(main(["export", str(run), "--format", "onnx", "--out",
                         str(tmp_path / "file" / "net.onnx")]), capsys, "is a file")
    before = (run / "model.pt").read_bytes()
    one_line_error(main(["export", str(run), "--format", "torchscript", "--out",
                         str(run / "model.pt")]), capsys, "is a file of the run itself")
    assert (run / "model.pt").read_bytes() == before
    one_line_error(main(["export", str(run), "--format", "onnx", "--out", out, "--data",
                         str(tmp_path / "no-data")]), capsys, "no such file or directory")
    with pytest.raises(SystemExit) as exited:
        main(["export", str(run), "--format", "tflite", "--out", out])
    one_line_error(int(exited.value.code or 0), capsys, "invalid choice: 'tflite'")
    assert not list(tmp_path.glob("net.*"))
