"""`fit`: train one architecture with one recipe, reporting after every epoch.

Imports neither Optuna nor Ray: the search passes a ``report(epoch, metrics)``
callback that returns True to stop. On CUDA the step runs under bf16 autocast
with channels-last tensors, a fused optimizer and cuDNN autotuning; loss,
accuracy and the divergence flag stay on the device inside an epoch (no host
sync per step), and the model can be compiled (`compile_model`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import ArchConfig, ConfigError, build_model, count_params
from trainers.augment import Batch, TrainLoader, normalize, tta_logits
from trainers.checkpoint import (
    CheckpointError,
    as_tuples,
    code_version,
    load_latest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from trainers.config import TrainConfig
from trainers.data import CifarData
from trainers.distill import Teacher, batch_loss
from trainers.ema import ModelEma
from trainers.sam import Sam
from trainers.schedules import lr_factor
from trainers.splits import fold_split, stratified_split, stratified_subset

SPLIT_SEED = 0  # every trial of every study validates on the same images
NAN_CHECK_STEPS_CUDA = 25  # steps between asynchronous copies of the divergence flag on CUDA
CUDNN_BENCHMARK = True  # cuDNN autotuning on CUDA (gpu_bench.py can turn it off)
# Execution settings, not part of a run's identity: a run may resume with them changed.
EXECUTION_FIELDS = frozenset({"compile", "compile_mode"})

Report = Callable[[int, dict[str, float]], bool]
StepHook = Callable[[int, int, int], None]  # (epoch, step, steps per epoch)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step = epoch, step
        super().__init__(f"training diverged: loss is NaN or infinite at epoch {epoch}, "
                         f"step {step}")


@dataclass
class FitResult:
    """What a run produced. ``model`` is the one evaluated (the EMA copy if enabled)."""

    model: nn.Module
    history: list[dict[str, float]]  # one row of metrics per epoch, resumed epochs included
    epochs: int  # epochs completed
    stopped: bool  # the report callback stopped the run
    resumed_from: int | None  # epoch of the checkpoint the run continued from
    seconds: float  # wall time of this call
    device: str
    n_params: int

    @property
    def val_acc(self) -> float:
        return self.history[-1]["val_acc"] if self.history else float("nan")  # NaN: no split

    @property
    def best_val_acc(self) -> float:
        return max((row["val_acc"] for row in self.history if not math.isnan(row["val_acc"])),
                   default=float("nan"))


@dataclass
class Split:
    """The images a run uses, as uint8 tensors on the training device."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor

    @classmethod
    def carve(cls, data: CifarData, cfg: TrainConfig, device: torch.device) -> Split:
        """Validation from the training set (stratified, fixed seed), then the subset.

        ``val_size = 0`` (a final run): every training image (or the subset) is
        trained on and the validation tensors are empty. With ``fold = "k/K"`` the
        held-out images are fold k of K instead (stratified, fixed), whatever val_size.
        """
        fold = cfg.fold_numbers()
        if fold is not None:
            kept, held = fold_split(data.train_labels, fold[0], fold[1], SPLIT_SEED)
        else:
            kept, held = stratified_split(data.train_labels, cfg.val_size, SPLIT_SEED)
        if cfg.train_subset:
            kept = kept[stratified_subset(data.train_labels[kept], cfg.train_subset, SPLIT_SEED)]

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        return cls(put(data.train_images[kept]), put(data.train_labels[kept]),
                   put(data.train_images[held]), put(data.train_labels[held]))


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only, not on BN parameters or biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig,
                   device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    fused = device.type == "cuda"
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), fused=fused)
    # "sam" steps with this too, after its second pass (`trainers.sam`).
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, fused=fused)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             tta_flip: bool, tta_translate: int = 0,
             batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy; one host sync for the whole set."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for start in range(0, len(images), batch_size):
        x = normalize(images[start:start + batch_size])
        y = labels[start:start + batch_size]
        with _autocast(x.device):
            logits = tta_logits(model, x, flip=tta_flip, translate=tta_translate)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = max(1, len(images))
    return loss_sum.item() / n, correct.item() / n


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


_compiled_for: list[ArchConfig] = []  # the architecture this process last compiled


def compile_model(model: nn.Module, arch: ArchConfig, mode: str) -> nn.Module:
    """``torch.compile(model, dynamic=False, mode=mode)``, after ``torch._dynamo.reset()``
    when this process last compiled another architecture.

    A search worker trains one architecture after another: without the reset each new
    network's graphs pile up in dynamo's caches until the recompile limit is hit, and
    from then on torch silently runs the model eagerly.
    """
    if _compiled_for and _compiled_for[0] != arch:
        torch._dynamo.reset()
    _compiled_for[:] = [arch]
    compiled: nn.Module = torch.compile(model, dynamic=False, mode=mode)  # type: ignore[assignment]
    return compiled


class DivergenceWatch:
    """The first step whose loss was NaN or infinite, recorded on the device.

    On a CPU it is read after every step (reading costs nothing there). On CUDA the
    flag is copied to pinned host memory without blocking every `NAN_CHECK_STEPS_CUDA`
    steps and read once the copy's event has completed, so the host never waits on
    the GPU inside an epoch, and a divergence is caught a few dozen steps after it.
    """

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)
        self.cuda = device.type == "cuda"
        self.host = torch.full((), -1, dtype=torch.long)
        if self.cuda:
            self.host = self.host.pin_memory()
        self.pending: torch.cuda.Event | None = None

    def record(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def poll(self, step: int) -> int | None:
        """The bad step if one is known by now, else None; never blocks on CUDA."""
        if not self.cuda:
            value = int(self.first_bad.item())
            return value if value >= 0 else None
        if self.pending is not None and self.pending.query():
            self.pending = None
            value = int(self.host.item())  # pinned host memory: no device sync
            if value >= 0:
                return value
        if self.pending is None and step % NAN_CHECK_STEPS_CUDA == 0:
            self.host.copy_(self.first_bad, non_blocking=True)
            self.pending = torch.cuda.Event()
            self.pending.record()
        return None

    def final(self) -> int | None:
        """The bad step of the epoch, if any (one sync, at the end of the epoch)."""
        value = int(self.first_bad.item())
        return value if value >= 0 else None


def fit(
    arch: ArchConfig,
    train_cfg: TrainConfig,
    data: CifarData,
    *,
    device: str | torch.device | None = None,
    report: Report | None = None,
    checkpoint_dir: Path | str | None = None,
    checkpoint_every: int = 1,
    checkpoint_seconds: float | None = None,
    deterministic: bool = False,
    log: Callable[[str], None] = print,
    on_step: StepHook | None = None,
    teacher: Teacher | None = None,
    compile: bool | None = None,
) -> FitResult:
    """Train ``arch`` with ``train_cfg`` on ``data``'s training split.

    Args:
        arch: the network.
        train_cfg: the recipe; its ``val_size`` images are held out for validation.
        data: the data set; its test split is not touched.
        device: ``"cuda"``, ``"cpu"``, ...; default: CUDA if present.
        report: called after each epoch as ``report(epoch, metrics)`` with
            ``val_acc``, ``val_loss``, ``train_loss``, ``train_acc``, ``lr``,
            ``seconds`` and ``images_per_s``; returning True stops the run. It
            runs after that epoch's checkpoint is written, never before.
        checkpoint_dir: where to write a checkpoint every ``checkpoint_every``
            epochs (and after the last); a checkpoint already there is resumed.
        checkpoint_seconds: also write one after an epoch that ends this many seconds
            or more after the last one written (whichever comes first), so a crash loses
            at most this long plus an epoch; None: by epochs only.
        deterministic: use deterministic kernels, so a resumed run ends with the
            same weights as an uninterrupted one (and no cuDNN autotuning).
        log: where progress lines ("resuming from epoch 3") go.
        on_step: called after each optimizer step as ``on_step(epoch, step, steps)``
            (for progress bars; it gets no metrics, so the host does not wait).
        teacher: trained networks to distil (`trainers.distill`): the loss becomes
            ``kd_loss`` with the recipe's ``kd_alpha`` and ``kd_temperature``.
        compile: ``torch.compile`` the training step's model (CUDA only; the
            recipe's ``compile_mode``); None: as the recipe's ``compile`` says.

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
        CheckpointError: the checkpoint there is unreadable or for another run.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    previous_benchmark = torch.backends.cudnn.benchmark
    dev = resolve_device(device)
    torch.use_deterministic_algorithms(deterministic or previous)
    # Shapes are static (whole batches, a fixed evaluation batch): let cuDNN time its
    # convolution algorithms once per shape, unless the run must be reproducible.
    torch.backends.cudnn.benchmark = (CUDNN_BENCHMARK and dev.type == "cuda"
                                      and not (deterministic or previous))
    try:
        return _fit(arch, train_cfg, data, dev, report,
                    Path(checkpoint_dir) if checkpoint_dir is not None else None,
                    (checkpoint_every, checkpoint_seconds), log, on_step, teacher,
                    train_cfg.compile if compile is None else compile)
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.backends.cudnn.benchmark = previous_benchmark


def _fit(arch: ArchConfig, train_cfg: TrainConfig, data: CifarData, dev: torch.device,
         report: Report | None, ckpt_dir: Path | None,
         checkpoint_when: tuple[int, float | None], log: Callable[[str], None],
         on_step: StepHook | None, teacher: Teacher | None, compiled: bool) -> FitResult:
    start_time = time.perf_counter()
    _seed_everything(train_cfg.seed)
    model = build_model(arch).to(dev)  # initialised on the CPU: the same weights on any device
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    step_model: nn.Module = model
    if compiled and dev.type == "cuda":
        step_model = compile_model(model, arch, train_cfg.compile_mode)
    ema = ModelEma(model, train_cfg.ema, train_cfg.ema_warmup) if train_cfg.ema > 0 else None

    split = Split.carve(data, train_cfg, dev)
    if teacher is not None:
        teacher.prepare(split.train_images, train_cfg, data.digest)
    gen = torch.Generator(device=dev)
    gen.manual_seed(train_cfg.seed)
    host_rng = random.Random(train_cfg.seed)
    loader = TrainLoader(split.train_images, split.train_labels, train_cfg, gen, host_rng)
    optimizer = make_optimizer(model, train_cfg, dev)
    sam = (Sam(model, optimizer, train_cfg.sam_rho, train_cfg.sam_adaptive, train_cfg.sam_every)
           if train_cfg.optimizer == "sam" else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(train_cfg, len(loader)))

    history: list[dict[str, float]] = []
    first_epoch, resumed_from = 1, None
    if ckpt_dir is not None:
        state = load_latest(ckpt_dir, log)
        if state is not None:
            check_same_run(state, arch, train_cfg, ckpt_dir)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None:
                ema.load_state_dict(state["ema"], steps_done=int(state["epoch"]) * len(loader))
            set_rng_state(state["rng"])
            gen.set_state(state["rng"]["device_gen"])
            host_rng.setstate(as_tuples(state["rng"]["host_rng"]))
            history = list(state["history"])
            resumed_from = int(state["epoch"])
            first_epoch = resumed_from + 1
            log(f"resuming from the checkpoint of epoch {resumed_from} in {ckpt_dir}")

    def save(epoch: int) -> None:
        assert ckpt_dir is not None
        save_checkpoint({
            "epoch": epoch, "arch": arch.to_dict(), "train": train_cfg.to_dict(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "rng": rng_state({"device_gen": gen.get_state(), "host_rng": host_rng.getstate()}),
            "history": history, "code_version": code_version(), "data_digest": data.digest,
        }, ckpt_dir)

    eval_model = ema.model if ema is not None and train_cfg.ema_eval else model
    every, every_seconds = checkpoint_when
    last_saved = time.perf_counter()
    stopped = False
    epoch = first_epoch - 1
    for epoch in range(first_epoch, train_cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loss, train_acc = _train_epoch(step_model, loader, optimizer, scheduler, ema,
                                             train_cfg, epoch, on_step, sam, teacher)
        train_seconds = time.perf_counter() - t0
        # Test-time augmentation on the last epoch only, unless the recipe asks for it on
        # every epoch (a study whose trials differ in length: the pruner compares epochs).
        tta = train_cfg.val_tta == "every" or epoch == train_cfg.epochs
        # val_size = 0 (a final run on every training image): nothing to validate on.
        val_loss, val_acc = (math.nan, math.nan) if not len(split.val_labels) else evaluate(
            eval_model, split.val_images, split.val_labels, tta_flip=tta and train_cfg.tta_flip,
            tta_translate=train_cfg.tta_translate if tta else 0)
        metrics = {
            "epoch": float(epoch), "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
            "images_per_s": len(loader) * loader.batch_size / max(train_seconds, 1e-9),
        }
        history.append(metrics)
        # The checkpoint comes before the report: whatever the report writes of this
        # epoch (promote's metrics.csv) must never run ahead of what a resume finds.
        due = (epoch % every == 0 or epoch == train_cfg.epochs or (
            every_seconds is not None and time.perf_counter() - last_saved >= every_seconds))
        saved = ckpt_dir is not None and due
        if saved:
            save(epoch)
            last_saved = time.perf_counter()
        stopped = bool(report(epoch, metrics)) if report is not None else False
        if stopped:
            if ckpt_dir is not None and not saved:
                save(epoch)
            break
    return FitResult(
        model=eval_model, history=history, epochs=epoch, stopped=stopped,
        resumed_from=resumed_from, seconds=time.perf_counter() - start_time,
        device=_device_name(dev), n_params=count_params(arch),
    )


def _train_epoch(model: nn.Module, loader: TrainLoader, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, ema: ModelEma | None,
                 cfg: TrainConfig, epoch: int,
                 on_step: StepHook | None = None, sam: Sam | None = None,
                 teacher: Teacher | None = None) -> tuple[float, float]:
    model.train()
    device = loader.images.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    watch = DivergenceWatch(device)
    seen = 0
    for step, batch in enumerate(loader, start=1):
        soft = teacher.soft_targets(batch, cfg.kd_temperature) if teacher is not None else None
        with _autocast(device):
            logits = model(batch.images)
            loss = batch_loss(logits, batch, cfg, soft)
        watch.record(loss, step)
        if (bad_step := watch.poll(step)) is not None:
            raise TrainingDiverged(epoch, bad_step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if sam is not None and sam.due(step):
            def loss_at(batch: Batch = batch, soft: torch.Tensor | None = soft) -> torch.Tensor:
                with _autocast(device):
                    return batch_loss(model(batch.images), batch, cfg, soft)
            sam.second_pass(loss_at)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update()
        loss_sum += loss.detach() * len(batch.labels)
        correct += (logits.detach().argmax(1) == batch.labels).sum()
        seen += len(batch.labels)
        if on_step is not None:
            on_step(epoch, step, len(loader))
    if (bad_step := watch.final()) is not None:
        raise TrainingDiverged(epoch, bad_step)
    return loss_sum.item() / max(1, seen), correct.item() / max(1, seen)


def check_same_run(state: dict[str, Any], arch: ArchConfig, cfg: TrainConfig,
                   directory: Path) -> None:
    """`CheckpointError` unless checkpoint ``state`` is of ``arch`` trained with ``cfg``.

    The stored dicts are read back into configs first, so a checkpoint written in
    an older dict format (or before a field with a default existed) still matches.
    Execution settings (`EXECUTION_FIELDS`: compile) may differ.
    """
    try:
        stored_arch = ArchConfig.from_dict(state["arch"])
        stored_train = TrainConfig.from_dict(state["train"])
    except ConfigError as err:
        raise CheckpointError(f"{directory}: the checkpoint's configs are unreadable: "
                              f"{err}") from None
    if stored_arch != arch:
        raise CheckpointError(f"{directory}: the checkpoint is of another architecture "
                              f"({stored_arch.describe()})")
    changed = sorted(k for k, v in cfg.to_dict().items()
                     if getattr(stored_train, k) != v and k not in EXECUTION_FIELDS)
    if changed:
        raise CheckpointError(f"{directory}: the checkpoint is of another recipe "
                              f"(differs in {', '.join(changed)})")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type
