"""The per-epoch progress bar of `search promote`."""

from __future__ import annotations

import io
import re

from search.results.progress import EpochProgress, duration

METRICS = {"epoch": 1.0, "train_loss": 1.5, "train_acc": 0.45, "val_loss": 1.25,
           "val_acc": 0.5512, "lr": 0.1, "seconds": 75.0, "images_per_s": 600.0}


def run_epochs(progress: EpochProgress, epochs: int, steps: int) -> None:
    for epoch in range(1, epochs + 1):
        for step in range(1, steps + 1):
            progress.step(epoch, step, steps)
        progress.epoch({**METRICS, "epoch": float(epoch)})


def plain(text: str) -> str:
    """What a terminal shows, roughly: the text without its escape sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_a_terminal_gets_a_bar_then_a_line_per_epoch() -> None:
    out = io.StringIO()
    progress = EpochProgress(3, out, tty=True)
    run_epochs(progress, epochs=3, steps=4)
    progress.close()
    text = plain(out.getvalue())
    assert "epoch 1/3" in text and "4/4" in text  # the last step of an epoch is drawn
    assert "━" in text  # rich's bar
    lines = [line.strip() for line in text.splitlines() if "train loss" in line]
    assert [line[:9] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    for line in lines:
        assert "val loss 1.2500 acc  55.12%" in line and "1m15s" in line
    # In epoch 2 the time left covers epoch 3 at the pace so far (75 s an epoch).
    assert "epoch 2/3" in text and "eta 1m15s" in text


def test_a_log_gets_only_the_epoch_lines() -> None:
    out = io.StringIO()
    run_epochs(EpochProgress(12, out, tty=False), epochs=2, steps=50)
    lines = out.getvalue().splitlines()
    assert [line[:11] for line in lines] == ["epoch  1/12", "epoch  2/12"]
    assert "\r" not in out.getvalue() and "#" not in out.getvalue()


def test_an_interrupted_bar_gives_the_terminal_back() -> None:
    out = io.StringIO()
    progress = EpochProgress(2, out, tty=True)
    progress.step(1, 1, 10)
    drawn = out.getvalue()
    assert "1/10" in plain(drawn)
    progress.close()
    assert "\x1b[?25h" in out.getvalue()[len(drawn):]  # the cursor shown again
    assert progress.bar is None


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (4.24, 75, 3725)] == ["4.2s", "1m15s", "1h02m"]
