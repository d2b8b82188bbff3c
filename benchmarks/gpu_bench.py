"""One run on one device: matmul ceiling, training throughput, trial time, search rate.

matmul        bf16 n x n matmuls (8192 on CUDA, timed with CUDA events after warm-up;
              a small one on a CPU so the path runs), and fp32 ones beside them.
fast          `trainers.fit` with the study's recipe (bf16 autocast, channels-last, a
              fused optimizer and cuDNN autotuning on CUDA, compiled unless --no-compile),
              the last of --epochs epochs (the first warm up and compile).
plain         the typical course script: per-image CPU transforms in a DataLoader with
              2 workers, fp32, batch 128 (`train_throughput.plain_epoch_rate`), the
              last of --epochs epochs on --plain-subset images.
plain_tuned   the same script tuned: --tuned-workers workers kept alive between epochs,
              bf16 autocast and channels-last on CUDA.
short trial   wall time of one `fit` of the study's trial length (its [train] epochs).
profile       (--profile) the top 15 kernels by device time over a few fast-path steps.
variants      (--variants) the fast path per network (--variant-nets) with the epoch
              augmented ahead, and with CUDA graphs (compile mode reduce-overhead).
search        `search run --executor local --timeout S --workers W` on a fresh SQLite
              store, for each W of --search-workers; finished trials counted in the store.

The JSON is written after every part, so a run killed half-way keeps what it measured.
The default parts take about 5 minutes on an H100/H200 (search 150 s + grace).

The recipe is the middle of the study's [train] ranges: the geometric mean of a log
range, the arithmetic mean of a linear one (on its step grid; whole numbers stay whole),
the middle choice of a list (index len // 2: resnet-budget gets batch 512, label
smoothing 0.1, Cutout 8, lr 0.089, weight decay 3.2e-4). --quick sizes everything for a
CPU through the same code: resnet-8-half, 512 training and 100 validation images, and the
smoke study with its trials on those images. A part that was not measured is null in the
JSON, with the reason under "notes"; the exit code is 1 if a part failed. Without
Optuna (a bare GPU machine) the search is skipped and the rest still runs.

    python benchmarks/gpu_bench.py [--data PATH] [--subset N] [--epochs E]
        [--batch-size B] [--no-compile] [--no-cudnn-benchmark] [--profile] [--variants]
        [--search-seconds S] [--search-grace G] [--search-workers 1,2,3] [--quick]
        [--out FILE]

Without the project installed, run it from the repository root with PYTHONPATH=. .

Writes benchmarks/results/gpu-<device>-<date>.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from record import RESULTS, machine, today
from train_throughput import DEFAULT_DATA, plain_epoch_rate

import trainers.training as fit_module
from models import BASELINES, ArchConfig, count_flops, count_params
from trainers.config import TrainConfig
from trainers.data import CifarData, load_cifar10
from trainers.training import fit, resolve_device

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "space" / "studies"  # read as TOML: `space` itself imports Optuna
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
PLAIN_BATCH = 128  # train_throughput.plain_epoch_rate's batch size
# --quick: CPU-sized, so the test runs the whole script in about a minute on 2 cores.
QUICK_NET, QUICK_SUBSET, QUICK_VAL, QUICK_STUDY = "resnet-8-half", 512, 100, "smoke"
QUICK_SEARCH_SECONDS, QUICK_SEARCH_GRACE = 20.0, 20.0
SEARCH_SECONDS, SEARCH_GRACE = 150.0, 30.0
PLAIN_SUBSET = 10_000  # the plain paths' images per epoch (they are slow by design)
PROFILE_STEPS = 30  # fast-path steps profiled with --profile
TOP_KERNELS = 15


def middle(raw: Any) -> Any:
    """The middle of one [train] value of a study file (see the module docstring)."""
    if isinstance(raw, list):
        return raw[len(raw) // 2]
    if not isinstance(raw, dict):
        return raw
    low, high = raw["low"], raw["high"]
    mid = math.sqrt(low * high) if raw.get("log") else (low + high) / 2
    if raw.get("step"):
        mid = low + round((mid - low) / raw["step"]) * raw["step"]
    return round(mid) if isinstance(low, int) and isinstance(high, int) else mid


def study_file(study: str) -> Path:
    """A built-in study's file, or the path given."""
    return Path(study) if Path(study).suffix == ".toml" else STUDIES / f"{study}.toml"


def study_recipe(study: str) -> tuple[str, TrainConfig]:
    """(the study's name, the middle of its [train] ranges) from a built-in name or a file."""
    path = study_file(study)
    raw = tomllib.loads(path.read_text())
    train = {key: middle(value) for key, value in raw.get("train", {}).items()}
    return raw.get("study", {}).get("name", path.stem), TrainConfig.from_dict(train)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """Dense n x n x n matmul rate after warm-up; CUDA events time the GPU's own work."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(max(3, repeats // 10)):  # clocks up, kernels chosen
        torch.matmul(a, b, out=out)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(repeats):
            torch.matmul(a, b, out=out)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
    else:
        t0 = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b, out=out)
        seconds = time.perf_counter() - t0
    return 2 * n**3 * repeats / seconds / 1e12


def fast_path(arch: ArchConfig, recipe: TrainConfig, data: CifarData, n: int, n_val: int,
              epochs: int, device: torch.device, compiled: bool) -> dict[str, Any]:
    """`fit` for ``epochs`` epochs on ``n`` images; the last epoch's training rate."""
    cfg = dataclasses.replace(recipe, epochs=epochs, train_subset=n, val_size=n_val,
                              warmup_epochs=min(recipe.warmup_epochs, epochs))
    t0 = time.perf_counter()
    rows = fit(arch, cfg, data, device=device, log=lambda _: None, compile=compiled).history
    batch = min(cfg.batch_size, n)
    rate = rows[-1]["images_per_s"]  # training steps only: fit times validation apart
    return {"images_per_s": rate, "seconds_per_epoch": n // batch * batch / rate,
            "seconds_per_epoch_with_validation": rows[-1]["seconds"],
            "batch_size": cfg.batch_size, "train_images": n, "val_images": n_val,
            "epochs": epochs, "precision": "bf16 autocast, channels-last"
            if device.type == "cuda" else "fp32", "recipe": cfg.to_dict(),
            "compiled": compiled and device.type == "cuda",
            "cudnn_benchmark": fit_module.CUDNN_BENCHMARK and device.type == "cuda",
            "first_epoch_seconds": rows[0]["seconds"],
            "wall_seconds": time.perf_counter() - t0}


def plain_path(arch: ArchConfig, data: CifarData, n: int, epochs: int, device: torch.device,
               workers: int, tuned: bool = False) -> dict[str, Any]:
    rate = plain_epoch_rate(data, n, epochs, device, workers, arch=arch, persistent=tuned,
                            amp=tuned)
    amp = tuned and device.type == "cuda"
    return {"images_per_s": rate, "seconds_per_epoch": n // PLAIN_BATCH * PLAIN_BATCH / rate,
            "batch_size": PLAIN_BATCH, "train_images": n, "epochs": epochs,
            "loader_workers": workers, "persistent_workers": tuned,
            "precision": "bf16 autocast, channels-last" if amp else
            "fp32 (PyTorch defaults: cuDNN may use TF32 for convolutions)"
            if device.type == "cuda" else "fp32"}


def profile_steps(arch: ArchConfig, recipe: TrainConfig, data: CifarData, n_val: int,
                  device: torch.device, compiled: bool) -> dict[str, Any]:
    """The top `TOP_KERNELS` kernels by device time (CPU time on a CPU) over one short
    epoch of the fast path, after an unprofiled warm-up epoch (compiling)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    n = PROFILE_STEPS * min(recipe.batch_size, 2048)
    cfg = dataclasses.replace(recipe, epochs=1, train_subset=n, val_size=n_val,
                              warmup_epochs=0.0)
    fit(arch, cfg, data, device=device, log=lambda _: None, compile=compiled)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fit(arch, cfg, data, device=device, log=lambda _: None, compile=compiled)
    events = prof.key_averages()

    def device_us(e: Any) -> float:
        if not cuda:
            return float(e.self_cpu_time_total)
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)))

    rows = [e for e in events if device_us(e) > 0]
    total = sum(device_us(e) for e in rows)
    top = sorted(rows, key=device_us, reverse=True)[:TOP_KERNELS]
    return {"steps": n // min(recipe.batch_size, n), "time": "device" if cuda else "cpu",
            "total_ms": total / 1e3, "kernels_total": len(rows),
            "top": [{"name": e.key[:160], "calls": e.count, "ms": device_us(e) / 1e3,
                     "share": device_us(e) / total if total else None} for e in top]}


def variants(nets: list[str], recipe: TrainConfig, data: CifarData, n: int, n_val: int,
             epochs: int, device: torch.device, compiled: bool) -> dict[str, Any]:
    """Images/s of the fast path per network: as is, with the epoch augmented ahead,
    and with CUDA graphs (reduce-overhead; CUDA only)."""
    out: dict[str, Any] = {}
    for net in nets:
        arch = BASELINES[net]
        row: dict[str, Any] = {"params": count_params(arch)}
        cases = {"baseline": (recipe, compiled),
                 "augment_ahead": (dataclasses.replace(recipe, augment_ahead=True), compiled)}
        if device.type == "cuda":
            cases["cuda_graphs"] = (dataclasses.replace(recipe, compile_mode="reduce-overhead"),
                                    True)
        for case, (cfg, comp) in cases.items():
            row[case] = fast_path(arch, cfg, data, n, n_val, epochs, device, comp)["images_per_s"]
        out[net] = row
    return out


def short_trial(arch: ArchConfig, recipe: TrainConfig, data: CifarData, device: torch.device,
                cap: tuple[int, int] | None, compiled: bool = False) -> dict[str, Any]:
    """Wall time of one `fit` of the study's trial length (model, split, epochs, validation)."""
    cfg = recipe
    if cap is not None:  # --quick: at most its training and validation images
        n, n_val = cap
        cfg = dataclasses.replace(recipe, train_subset=min(recipe.train_subset or n, n),
                                  val_size=min(recipe.val_size, n_val))
    t0 = time.perf_counter()
    result = fit(arch, cfg, data, device=device, log=lambda _: None, compile=compiled)
    seconds = time.perf_counter() - t0
    n_train = cfg.train_subset or len(data.train_labels) - cfg.val_size
    return {"seconds": seconds, "epochs": result.epochs, "train_images": n_train,
            "val_images": cfg.val_size, "val_acc": result.val_acc, "recipe": cfg.to_dict(),
            "compiled": compiled and device.type == "cuda",
            "note": "compiling is included (a search worker compiles each new architecture)"
            if compiled and device.type == "cuda" else None}


def search_command() -> list[str]:
    """The `search` console script beside this Python, else `python -m search`."""
    script = Path(sys.executable).parent / "search"
    return [str(script)] if script.exists() else [sys.executable, "-m", "search"]


def shrink_study(text: str, n: int, n_val: int) -> str:
    """A study file's text with ``train_subset = n`` and ``val_size = n_val`` (--quick)."""
    for key, value in (("train_subset", n), ("val_size", n_val)):
        line = f"{key} = {value}"
        text, found = re.subn(rf"(?m)^{key}\s*=.*$", line, text)
        if not found:
            text = re.sub(r"(?m)^\[train\]\s*$", f"[train]\n{line}", text, count=1)
    return text


def search_rate(study: str, data: str, device: torch.device, seconds: float,
                grace: float, shrink: tuple[int, int] | None,
                workers: int = 1) -> dict[str, Any]:
    """Run `search run` for ``seconds`` (no new trial after that; running trials get
    ``grace`` more seconds, then Ctrl-C) and count the finished trials in its store.

    ``shrink`` (--quick): the study's trials train on (n, n_val) images only.
    """
    import optuna

    from search.record import finished

    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        if shrink is not None:
            path = Path(tmp) / study_file(study).name
            path.write_text(shrink_study(study_file(study).read_text(), *shrink))
            study = str(path)
        elif Path(study).suffix == ".toml":
            study = str(Path(study).resolve())  # the command runs in the temporary folder
        cmd = [*search_command(), "run", "--study", study, "--executor", "local",
               "--timeout", f"{seconds:g}", "--storage", url, "--data", data,
               "--device", device.type, "--n-trials", "1000000", "--seed", "0",
               "--workers", str(workers)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        print(f"search: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        log_path = Path(tmp) / "search.log"
        interrupted = False
        with log_path.open("w") as log:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env)
            try:
                proc.wait(timeout=seconds + grace)
            except subprocess.TimeoutExpired:
                interrupted = True
                proc.send_signal(signal.SIGINT)  # running trials end FAIL: not counted
                try:
                    proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            wall = time.perf_counter() - t0
        output = log_path.read_text()
        print(output, file=sys.stderr, end="")
        if proc.returncode != 0 and not interrupted:
            tail = " | ".join(output.strip().splitlines()[-3:])
            raise RuntimeError(f"search run exited with code {proc.returncode}: {tail}")
        names = optuna.study.get_all_study_names(storage=url)
        trials = optuna.load_study(study_name=names[0], storage=url).get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    done = sum(finished(t) for t in trials)
    return {"trials_per_hour": done / wall * 3600, "trials_finished": done,
            "trials_by_state": states, "timeout_seconds": seconds, "grace_seconds": grace,
            "wall_seconds": wall, "interrupted_after_grace": interrupted,
            "study": Path(study).stem, "train_images_per_trial": None if shrink is None
            else shrink[0], "val_images_per_trial": None if shrink is None else shrink[1],
            "executor": "local", "workers": workers, "store": "sqlite",
            "optuna": optuna.__version__}


def worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be counts such as 1,2,3, got {text!r}") from None
    if not counts or not all(1 <= c <= 8 for c in counts):
        raise argparse.ArgumentTypeError(f"each count must be in 1..8, got {text!r}")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: CUDA if present)")
    parser.add_argument("--subset", type=int, default=None,
                        help="training images for the fast path (default: all 45,000; "
                        "--quick: 512)")
    parser.add_argument("--plain-subset", type=int, default=None,
                        help=f"training images for the plain paths (default: {PLAIN_SUBSET:,}; "
                        "--quick: 512)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per throughput path; the last is timed (default: 2)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="the fast path's batch size (default: the study's recipe)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the fast path (default: on with CUDA)")
    parser.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction,
                        default=True, help="cuDNN autotuning in the fast path (default: on)")
    parser.add_argument("--profile", action="store_true",
                        help=f"the top {TOP_KERNELS} kernels of {PROFILE_STEPS} fast-path steps")
    parser.add_argument("--variants", action="store_true",
                        help="fast path with augment_ahead and with CUDA graphs, per network")
    parser.add_argument("--variant-nets", default="resnet-20,resnet-443",
                        help="networks for --variants (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="the typical plain path's DataLoader workers (default: 2)")
    parser.add_argument("--tuned-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="the tuned plain path's workers (default: %(default)s)")
    parser.add_argument("--net", default=None, choices=sorted(BASELINES),
                        help="baseline to train (default: resnet-443; --quick: resnet-8-half)")
    parser.add_argument("--study", default=None,
                        help="study for the recipe, the trial length and the search "
                        "(default: resnet-budget; --quick: smoke)")
    parser.add_argument("--search-seconds", type=float, default=None,
                        help=f"search run --timeout; 0 skips the search (default: "
                        f"{SEARCH_SECONDS:g}; --quick: {QUICK_SEARCH_SECONDS:g})")
    parser.add_argument("--search-grace", type=float, default=None,
                        help="seconds the trials running at the timeout get to finish before "
                        f"Ctrl-C (default: {SEARCH_GRACE:g}; --quick: {QUICK_SEARCH_GRACE:g})")
    parser.add_argument("--search-workers", type=worker_counts, default=[1],
                        help="workers on the one device, a search per count (default: 1)")
    parser.add_argument("--quick", action="store_true", help="CPU sizes, the same code paths")
    parser.add_argument("--out", default=None, help="JSON file (default: "
                        "benchmarks/results/gpu-<device>-<date>.json)")
    args = parser.parse_args(argv)
    q = args.quick
    args.net = args.net or (QUICK_NET if q else "resnet-443")
    args.study = args.study or (QUICK_STUDY if q else "resnet-budget")
    args.subset = args.subset or (QUICK_SUBSET if q else 0)
    args.plain_subset = args.plain_subset or (QUICK_SUBSET if q else PLAIN_SUBSET)
    args.val = QUICK_VAL if q else None
    if args.search_seconds is None:
        args.search_seconds = QUICK_SEARCH_SECONDS if q else SEARCH_SECONDS
    if args.search_grace is None:
        args.search_grace = QUICK_SEARCH_GRACE if q else SEARCH_GRACE
    nets = args.variant_nets.split(",")
    if unknown := [net for net in nets if net not in BASELINES]:
        parser.error(f"--variant-nets: no baseline {', '.join(unknown)}")
    args.variant_nets = nets
    if args.epochs < 1 or args.subset < 0 or args.search_seconds < 0 or args.plain_subset < 128:
        parser.error(f"need --epochs >= 1, --subset >= 0, --plain-subset >= 128, "
                     f"--search-seconds >= 0, got {args.epochs=}, {args.subset=}, "
                     f"{args.plain_subset=}, {args.search_seconds=}")
    if args.batch_size is not None and not 1 <= args.batch_size <= 65536:
        parser.error(f"--batch-size must be in 1..65536, got {args.batch_size}")
    if not study_file(args.study).is_file():
        parser.error(f"--study: no study file {study_file(args.study)}")
    if not Path(args.data).exists():
        parser.error(f"--data: {args.data} does not exist")
    return args


def attempt(name: str, notes: dict[str, str], part: Callable[[], Any]) -> Any:
    """Run one measurement; on an error, None, with the reason in ``notes``."""
    print(f"-- {name}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        value = part()
    except Exception as err:
        traceback.print_exc()
        notes[name] = f"not measured: {type(err).__name__}: {err}"
        return None
    print(f"-- {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    compiled = cuda if args.compile is None else args.compile
    fit_module.CUDNN_BENCHMARK = args.cudnn_benchmark
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    arch = BASELINES[args.net]
    flops = count_flops(arch)
    train_flops = 3 * flops  # forward + backward ~= 3x the forward FLOPs per image
    study_name, recipe = study_recipe(args.study)
    if args.batch_size is not None:
        recipe = dataclasses.replace(recipe, batch_size=args.batch_size)
    data = load_cifar10(args.data, progress=lambda m: print(m, file=sys.stderr))
    n_val = args.val or recipe.val_size
    available = len(data.train_labels) - n_val
    n = min(args.subset or available, available)
    n_plain = min(args.plain_subset, available)
    notes: dict[str, str] = {}
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    out = Path(args.out) if args.out else RESULTS / f"gpu-{slug}-{today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    # (n, repeats): a CPU only runs the code path (its bf16 matmuls can be 50x slower).
    sizes = {"bf16": (8192, 100) if cuda else (256, 5),
             "fp32": (8192, 20) if cuda else (1024, 10)}
    # The ceiling is the matmul rate in the precision training runs in: bf16 on CUDA,
    # fp32 on a CPU (fit runs no autocast there).
    basis = "bf16" if cuda else "fp32"
    fields: dict[str, Any] = {
        "benchmark": "gpu_bench", "date": today(),
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]), "argv": sys.argv,
        "machine": machine(torch=torch.__version__, cuda=str(torch.version.cuda),
                           cudnn=str(torch.backends.cudnn.version())),
        "device": name, "device_type": device.type, "torch": torch.__version__,
        "quick": args.quick, "complete": False,
        "net": {"name": args.net, "params": count_params(arch), "forward_flops": flops,
                "train_flops_per_image": train_flops},
        "study": study_name, "data": data.source, "train_images": n, "val_images": n_val,
        "plain_train_images": n_plain,
        "batch_sizes": {"fast": recipe.batch_size, "plain": PLAIN_BATCH},
        "compile": compiled and cuda, "cudnn_benchmark": args.cudnn_benchmark and cuda,
        "matmul_bf16_tflops": None, "matmul_fp32_tflops": None,
        "matmul_sizes": {key: {"n": n_mm, "repeats": reps} for key, (n_mm, reps) in sizes.items()},
        "matmul_timing": "CUDA events" if cuda else "perf_counter",
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                 "cudnn": torch.backends.cudnn.allow_tf32},
        "fraction_basis": f"matmul_{basis}_tflops",
        "fast": None, "plain": None, "plain_tuned": None, "speedup": None,
        "speedup_over_tuned": None, "short_trial_seconds": None, "short_trial": None,
        "profile": None, "variants": None, "trials_per_hour": None, "search": None,
        "searches": [], "notes": notes,
    }

    def save() -> None:  # after every part: a killed run keeps what it measured
        out.write_text(json.dumps(fields, indent=2) + "\n")

    for key in sizes:
        fields[f"matmul_{key}_tflops"] = attempt(f"matmul_{key}_tflops", notes, functools.partial(
            matmul_tflops, device, DTYPES[key], *sizes[key]))
    ceiling = fields[f"matmul_{basis}_tflops"]
    if ceiling is None:
        notes["fraction_of_matmul"] = f"not measured: no {basis} matmul rate"
    save()

    def rate_row(row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is not None:
            row["achieved_tflops"] = row["images_per_s"] * train_flops / 1e12
            row["fraction_of_matmul"] = row["achieved_tflops"] / ceiling if ceiling else None
        return row

    fields["fast"] = rate_row(attempt("fast", notes, lambda: fast_path(
        arch, recipe, data, n, n_val, args.epochs, device, compiled)))
    save()
    fields["plain"] = rate_row(attempt("plain", notes, lambda: plain_path(
        arch, data, n_plain, args.epochs, device, args.workers)))
    save()
    fields["plain_tuned"] = rate_row(attempt("plain_tuned", notes, lambda: plain_path(
        arch, data, n_plain, args.epochs, device, args.tuned_workers, tuned=True)))
    fast, plain, tuned = fields["fast"], fields["plain"], fields["plain_tuned"]
    fields["speedup"] = fast["images_per_s"] / plain["images_per_s"] if fast and plain else None
    fields["speedup_over_tuned"] = (fast["images_per_s"] / tuned["images_per_s"]
                                    if fast and tuned else None)
    if fields["speedup"] is None:
        notes["speedup"] = "not measured: a throughput path was not measured"
    save()
    trial = attempt("short_trial_seconds", notes, lambda: short_trial(
        arch, recipe, data, device, (n, n_val) if args.quick else None, compiled))
    fields["short_trial"], fields["short_trial_seconds"] = trial, trial and trial["seconds"]
    save()
    if args.profile:
        fields["profile"] = attempt("profile", notes, lambda: profile_steps(
            arch, recipe, data, min(n_val, 1000), device, compiled))
        save()
    if args.variants:
        fields["variants"] = attempt("variants", notes, lambda: variants(
            args.variant_nets, recipe, data, n, n_val, args.epochs, device, compiled))
        save()

    if args.search_seconds == 0:
        notes["trials_per_hour"] = "skipped: --search-seconds 0"
    elif importlib.util.find_spec("optuna") is None:
        notes["trials_per_hour"] = ("skipped: optuna is not installed for this Python "
                                    "(the search needs optuna and sqlalchemy)")
    else:
        for workers in args.search_workers:
            if cuda:
                torch.cuda.empty_cache()  # the search's workers train on the same card
            search = attempt("trials_per_hour", notes, lambda w=workers: search_rate(
                args.study, str(Path(args.data).resolve()), device, args.search_seconds,
                args.search_grace, (n, n_val) if args.quick else None, w))
            if search is not None:
                fields["searches"].append(search)
                if fields["search"] is None:
                    fields["search"], fields["trials_per_hour"] = search, \
                        search["trials_per_hour"]
            save()
    fields["complete"] = True
    save()
    print_table(fields)
    print(f"saved {out}")
    return 1 if any(v.startswith("not measured") for v in notes.values()) else 0


def print_table(r: dict[str, Any]) -> None:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    print(f"device {r['device']}, torch {r['torch']}, net {r['net']['name']} "
          f"({r['net']['params']:,} parameters, {r['net']['forward_flops'] / 1e6:.1f} MFLOPs), "
          f"{r['train_images']:,} training images")
    print(f"matmul bf16 {num(r['matmul_bf16_tflops'], '.3f')} TFLOP/s, fp32 "
          f"{num(r['matmul_fp32_tflops'], '.3f')} TFLOP/s ({r['matmul_timing']})")
    print(f"{'path':<11} {'batch':>5} {'images/s':>10} {'s/epoch':>9} {'TFLOP/s':>9} "
          f"{'of matmul':>10}")
    for path in ("fast", "plain", "plain_tuned"):
        row = r[path]
        if row is None:
            print(f"{path:<11} not measured: {r['notes'].get(path)}")
            continue
        frac = row["fraction_of_matmul"]
        print(f"{path:<11} {row['batch_size']:>5} {row['images_per_s']:>10.1f} "
              f"{row['seconds_per_epoch']:>9.2f} {row['achieved_tflops']:>9.4f} "
              f"{num(None if frac is None else 100 * frac, '>9.1f')}%")
    print(f"speedup (fast / plain images/s): {num(r['speedup'], '.2f')}x, over the tuned "
          f"plain path {num(r['speedup_over_tuned'], '.2f')}x")
    trial = r["short_trial"]
    print(f"short trial: {num(r['short_trial_seconds'], '.1f')} s" + (
        f" ({trial['epochs']} epochs, {trial['train_images']:,} images, study {r['study']})"
        if trial else ""))
    for search in r["searches"]:
        print(f"search, {search['workers']} worker(s): {search['trials_per_hour']:.1f} "
              f"trials/hour ({search['trials_finished']} finished in "
              f"{search['wall_seconds']:.0f} s)")
    if not r["searches"]:
        print(f"search: - ({r['notes'].get('trials_per_hour')})")


if __name__ == "__main__":
    sys.exit(main())
