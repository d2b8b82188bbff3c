"""The per-epoch progress bar of `search promote`."""

from __future__ import annotations

import io

from search.results.progress import EpochProgress, duration

METRICS = {"epoch": 1.0, "train_loss": 1.5, "train_acc": 0.45, "val_loss": 1.25,
           "val_acc": 0.5512, "lr": 0.1, "seconds": 75.0, "images_per_s": 600.0}


def run_epochs(progress: EpochProgress, epochs: int, steps: int) -> None:
    for epoch in range(1, epochs + 1):
        for step in range(1, steps + 1):
            progress.step(epoch, step, steps)
        progress.epoch({**METRICS, "epoch": float(epoch)})


def test_a_terminal_gets_a_bar_then_a_line_per_epoch() -> None:
    out = io.StringIO()
    run_epochs(EpochProgress(3, out, tty=True), epochs=3, steps=4)
    text = out.getvalue()
    assert "[" + "#" * 28 + "] 4/4" in text  # the last step of an epoch is always drawn
    lines = text.split("\n")
    assert len(lines) == 4 and lines[-1] == ""
    for i, line in enumerate(lines[:3], start=1):
        last = line.split("\r\x1b[2K")[-1]  # what the terminal shows once the line ends
        assert last.startswith(f"epoch {i}/3  train loss 1.5000")
        assert "val loss 1.2500 acc  55.12%" in last and "1m15s" in last


def test_a_log_gets_only_the_epoch_lines() -> None:
    out = io.StringIO()
    run_epochs(EpochProgress(12, out, tty=False), epochs=2, steps=50)
    lines = out.getvalue().splitlines()
    assert [line[:11] for line in lines] == ["epoch  1/12", "epoch  2/12"]
    assert "\r" not in out.getvalue() and "#" not in out.getvalue()


def test_an_interrupted_bar_ends_its_line() -> None:
    out = io.StringIO()
    progress = EpochProgress(2, out, tty=True)
    progress.step(1, 1, 10)
    progress.close()
    assert out.getvalue().endswith("\n") and "1/10" in out.getvalue()


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (4.24, 75, 3725)] == ["4.2s", "1m15s", "1h02m"]
