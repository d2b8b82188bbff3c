"""`search.api`: the README's notebook example, run as written (a real smoke search, a
promote and a prediction), and the API's errors."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

from search import api
from tests.conftest import SHARED_ARCHIVE
from tests.search.smoke import Searched
from trainers import CifarData

README = Path(__file__).resolve().parents[2] / "README.md"


def example() -> str:
    """The code block after ``<!-- api-example -->`` in the README."""
    text = README.read_text()
    match = re.search(r"<!-- api-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "the README has no api-example block"
    return match.group(1)


def test_the_readme_example_runs_end_to_end(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    code = example()
    assert 'DATA = "../shared/data/cifar10-jpeg.tar.gz"' in code
    code = code.replace('"../shared/data/cifar10-jpeg.tar.gz"', repr(str(SHARED_ARCHIVE)))
    monkeypatch.chdir(tmp_path)  # runs/smoke/ goes here
    monkeypatch.delenv("SEARCH_STORAGE", raising=False)
    printed = io.StringIO()
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md:api-example", "exec"), namespace)
    lines = printed.getvalue().splitlines()
    run = namespace["run"]
    assert isinstance(run, api.Run) and not run.model.training
    assert (tmp_path / "runs" / "smoke" / "study.db").is_file()
    run_dir = Path(str(namespace["run_dir"])).resolve()
    assert run_dir.parent == (tmp_path / "runs" / "smoke").resolve()
    assert run.summary is not None and 0.0 < run.summary["test_acc"] <= 1.0
    labels = namespace["labels"]
    assert isinstance(labels, np.ndarray) and labels.shape == (8,)
    # What it printed: the best trials, the promoted run, the predicted class names.
    assert re.match(r"\d+ 0\.\d+ ", lines[0]), lines
    assert lines[-1].startswith("[") and lines[-1].count("'") == 16, lines[-1]


def test_predict_matches_the_model_and_its_flips(promoted: Path, data: CifarData) -> None:
    import torch

    run = api.load(promoted)
    images = data.test_images[:200]
    labels = api.predict(run, images)
    probs = api.predict_proba(promoted, images)
    assert probs.shape == (200, 10) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.array_equal(probs.argmax(1), labels)
    assert len(set(labels.tolist())) >= 3  # a network that learned, not one class
    # By hand: normalised images and their mirrors through the module, logits averaged.
    from trainers.augment import normalize

    with torch.no_grad():
        x = normalize(torch.from_numpy(images))
        logits = run.model(x) + run.model(x.flip(3))
    assert np.array_equal(logits.argmax(1).numpy(), labels)
    assert (np.mean(labels == data.test_labels[:200])) > 0.2


def test_api_errors_are_the_commands_one_line_errors(searched: Searched,
                                                     tmp_path: Path) -> None:
    with pytest.raises(api.Error, match="no-such-study"):
        api.run("no-such-study", out=None)
    with pytest.raises(api.Error, match=r"not COMPLETE|no trial"):
        api.promote(99, str(searched.study), storage=searched.url,
                    study_name=searched.name, out=None)
    with pytest.raises(api.Error, match=r"neither model\.pt nor checkpoint\.pt"):
        api.load(tmp_path)
    run = api.load(searched.root / "trial-1")
    with pytest.raises(api.Error, match="uint8 N x 32 x 32 x 3"):
        api.predict(run, np.zeros((2, 3, 32, 32), np.uint8))
    best = api.best(str(searched.study), storage=searched.url, study_name=searched.name)
    assert [t.number for t in best] == sorted(
        [t.number for t in best], key=lambda n: -next(b.value for b in best if b.number == n))
