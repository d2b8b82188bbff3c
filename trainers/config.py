"""`TrainConfig`: the training recipe, separate from the architecture."""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from typing import Any

from models.validate import ConfigError, kwargs_from_dict

OPTIMIZERS = ("sgd", "adamw", "sam")
SCHEDULES = ("cosine", "onecycle", "multistep")
POLICIES = ("none", "trivialaugment", "randaugment", "autoaugment")  # trainers.policies
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")  # torch.compile
VAL_TTA = ("final", "every")


def _check(ok: bool, field: str, value: Any, problem: str) -> None:
    if not ok:
        raise ConfigError(field, value, problem)


def parse_fold(text: str) -> tuple[int, int] | None:
    """``"2/5"`` as (2, 5): fold 2 (1-based) of 5; None unless 1 <= k <= K and 2 <= K <= 20."""
    parts = text.split("/")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        return None
    k, total = int(parts[0]), int(parts[1])
    return (k, total) if 2 <= total <= 20 and 1 <= k <= total else None


def _milestones(text: str) -> tuple[float, ...] | None:
    """``"0.5,0.75"`` as (0.5, 0.75), or None unless increasing fractions in (0, 1)."""
    try:
        fractions = tuple(float(part) for part in text.split(","))
    except ValueError:
        return None
    increasing = all(a < b for a, b in itertools.pairwise(fractions))
    return fractions if increasing and all(0.0 < f < 1.0 for f in fractions) else None


@dataclass(frozen=True)
class TrainConfig:
    """How a network is trained: optimizer, schedule, augmentation, data, length."""

    epochs: int = 15  # passes over the training split
    batch_size: int = 512  # images per optimizer step
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum), "adamw" or "sam" (SAM over SGD-Nesterov)
    lr: float = 0.2  # peak learning rate
    momentum: float = 0.9  # SGD momentum; AdamW beta1
    weight_decay: float = 5e-4  # decoupled for AdamW, L2 for SGD; conv/linear weights only
    schedule: str = "cosine"  # "cosine" (linear warmup, cosine decay), "onecycle", "multistep"
    warmup_epochs: float = 1.0  # epochs of linear warmup before the cosine decay
    label_smoothing: float = 0.0  # probability mass spread over all classes, [0, 1)
    crop: bool = True  # random 32x32 crop of the image padded by crop_padding
    crop_padding: int = 4  # pixels of (reflection) padding for the random crop
    flip: bool = True  # random horizontal flip
    cutout: int = 0  # side of the Cutout square, pixels; 0 = off
    mixup: float = 0.0  # mixup Beta(alpha, alpha) parameter; 0 = off
    cutmix: float = 0.0  # CutMix Beta(alpha, alpha) parameter; 0 = off
    ema: float = 0.0  # per-step decay of an exponential moving average of weights; 0 = off
    tta_flip: bool = True  # evaluate on the image and its mirror, average the logits
    train_subset: int = 0  # training images used per run (stratified); 0 = all
    val_size: int = 5000  # images held out of the training set for validation; 0 = none
    seed: int = 0  # seeds the split, the initial weights and the augmentation
    compile: bool = False  # torch.compile the model (CUDA only)
    sam_rho: float = 0.05  # SAM: radius of the weight perturbation (ASAM: about 2.0)
    sam_adaptive: bool = False  # ASAM: the perturbation scaled by each weight's magnitude
    sam_every: int = 1  # SAM on every k-th step, plain SGD-Nesterov on the others
    lr_floor: float = 0.0  # cosine: the lr the decay ends at, as a fraction of lr
    milestones: str = "0.5,0.75"  # multistep: fractions of the run where the lr is cut
    gamma: float = 0.1  # multistep: the lr's factor at each milestone
    ema_warmup: bool = True  # EMA decay min(ema, (1 + t) / (10 + t)) at step t
    ema_eval: bool = True  # with ema > 0: evaluate (and keep) the EMA weights, else the raw
    erasing: float = 0.0  # random erasing: probability per image; 0 = off
    erasing_min_area: float = 0.02  # random erasing: smallest erased share of the image
    erasing_max_area: float = 0.33  # random erasing: largest erased share of the image
    erasing_max_aspect: float = 3.3  # random erasing: aspect ratios in [1/this, this]
    tta_translate: int = 0  # test time: also average over copies shifted by this many pixels
    jitter: float = 0.0  # colour jitter: brightness, contrast, saturation x U[1-j, 1+j]; 0 = off
    rotate: float = 0.0  # random rotation, up to this many degrees either way; 0 = off
    policy: str = "none"  # augmentation policy: "trivialaugment", "randaugment", "autoaugment"
    policy_ops: int = 2  # randaugment: ops per image (N)
    policy_magnitude: int = 9  # randaugment: magnitude bin of 0..30 (M)
    ricap: float = 0.0  # RICAP Beta(b, b) parameter for the four-image split; 0 = off
    fold: str = ""  # "k/K": hold out fold k of K (stratified) instead of val_size; "" = none
    kd_alpha: float = 0.9  # distillation (with teachers): weight of the teachers' soft loss
    kd_temperature: float = 4.0  # distillation: softmax temperature of student and teachers
    compile_mode: str = "default"  # torch.compile mode; "reduce-overhead": CUDA graphs
    augment_ahead: bool = False  # augment each epoch's images in one pass before its steps
    val_tta: str = "final"  # test-time augmentation in validation: "final" epoch, or "every"

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", self.epochs, "must be >= 1")
        _check(1 <= self.batch_size <= 65536, "batch_size", self.batch_size, "must be in 1..65536")
        _check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer,
               f"must be one of {OPTIMIZERS}")
        _check(0.0 < self.lr <= 10.0, "lr", self.lr, "must be in (0, 10]")
        _check(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "must be in [0, 1)")
        _check(0.0 <= self.weight_decay < 1.0, "weight_decay", self.weight_decay,
               "must be in [0, 1)")
        _check(self.schedule in SCHEDULES, "schedule", self.schedule,
               f"must be one of {SCHEDULES}")
        _check(0.0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", self.warmup_epochs,
               f"must be in 0..epochs ({self.epochs})")
        _check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", self.label_smoothing,
               "must be in [0, 1)")
        _check(0 <= self.crop_padding <= 16, "crop_padding", self.crop_padding, "must be in 0..16")
        _check(0 <= self.cutout <= 32, "cutout", self.cutout, "must be in 0..32 pixels")
        for name in ("mixup", "cutmix"):
            value = getattr(self, name)
            _check(0.0 <= value <= 10.0, name, value, "must be in 0..10 (0 = off)")
        _check(0.0 <= self.ema < 1.0, "ema", self.ema, "must be in [0, 1) (0 = off)")
        _check(self.train_subset >= 0, "train_subset", self.train_subset, "must be >= 0 (0 = all)")
        _check(self.val_size == 0 or self.val_size >= 10, "val_size", self.val_size,
               "must be 0 (no validation split: final runs only) or >= 10 (an image per class)")
        _check(self.seed >= 0, "seed", self.seed, "must be >= 0")
        _check(0.0 < self.sam_rho <= 10.0, "sam_rho", self.sam_rho, "must be in (0, 10]")
        _check(1 <= self.sam_every <= 1000, "sam_every", self.sam_every, "must be in 1..1000")
        _check(0.0 <= self.lr_floor < 1.0, "lr_floor", self.lr_floor, "must be in [0, 1)")
        _check(_milestones(self.milestones) is not None, "milestones", self.milestones,
               "must be increasing fractions of the run in (0, 1), comma-separated")
        _check(0.0 < self.gamma <= 1.0, "gamma", self.gamma, "must be in (0, 1]")
        _check(0.0 <= self.erasing <= 1.0, "erasing", self.erasing, "must be in 0..1 (0 = off)")
        _check(0.0 < self.erasing_min_area <= self.erasing_max_area < 1.0, "erasing_max_area",
               self.erasing_max_area, f"must be in [erasing_min_area ({self.erasing_min_area}), "
               "1) with erasing_min_area > 0")
        _check(1.0 <= self.erasing_max_aspect <= 10.0, "erasing_max_aspect",
               self.erasing_max_aspect, "must be in 1..10")
        _check(0 <= self.tta_translate <= 8, "tta_translate", self.tta_translate,
               "must be in 0..8 pixels")
        _check(0.0 <= self.jitter < 1.0, "jitter", self.jitter, "must be in [0, 1) (0 = off)")
        _check(0.0 <= self.rotate <= 180.0, "rotate", self.rotate, "must be in 0..180 degrees")
        _check(self.policy in POLICIES, "policy", self.policy, f"must be one of {POLICIES}")
        _check(1 <= self.policy_ops <= 4, "policy_ops", self.policy_ops, "must be in 1..4")
        _check(0 <= self.policy_magnitude <= 30, "policy_magnitude", self.policy_magnitude,
               "must be a bin in 0..30")
        _check(0.0 <= self.ricap <= 10.0, "ricap", self.ricap, "must be in 0..10 (0 = off)")
        _check(not self.fold or parse_fold(self.fold) is not None, "fold", self.fold,
               "must be k/K with 2 <= K <= 20 folds and 1 <= k <= K (such as 1/5)")
        _check(0.0 <= self.kd_alpha <= 1.0, "kd_alpha", self.kd_alpha, "must be in 0..1")
        _check(self.compile_mode in COMPILE_MODES, "compile_mode", self.compile_mode,
               f"must be one of {COMPILE_MODES}")
        _check(self.val_tta in VAL_TTA, "val_tta", self.val_tta, f"must be one of {VAL_TTA}")
        _check(0.5 <= self.kd_temperature <= 20.0, "kd_temperature", self.kd_temperature,
               "must be in 0.5..20")

    def fold_numbers(self) -> tuple[int, int] | None:
        """`fold` as (k, K), or None without one."""
        return parse_fold(self.fold) if self.fold else None

    def milestone_fractions(self) -> tuple[float, ...]:
        """`milestones` as numbers: the fractions of the run where the lr is cut."""
        fractions = _milestones(self.milestones)
        assert fractions is not None  # checked in __post_init__
        return fractions

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        """Rebuild a recipe from `to_dict` output; bad fields raise `ConfigError`."""
        return cls(**kwargs_from_dict(cls, data))
