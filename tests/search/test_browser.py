"""`search dashboard` in a real browser: Debian's headless Chromium driven by Playwright.

The test builds a real SQLite store with COMPLETE and PRUNED trials, starts the
dashboard as a subprocess and checks what optuna-dashboard's React app renders: the
study on the home page, every trial with its state on the trials page, and the
intermediate-values plot (one curve per trial) on the study page. Full-page screenshots
go to $SEARCH_TEST_ARTIFACTS (else the test's tmp_path).

Skipped when /usr/bin/chromium or the playwright package is missing, unless
SEARCH_REQUIRE_BROWSER is set (CI), where that is a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from search.dashboard import trial_artifacts
from tests.conftest import missing as gate
from tests.search.smoke import Searched

SEARCH = Path(sys.executable).parent / "search"
CHROMIUM = Path("/usr/bin/chromium")
# --disable-dev-shm-usage: containers often have a 64 MB /dev/shm, where Chromium's
# renderer crashes; Debian's launcher means to add it itself but its check can misfire.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"]
STUDY = "browser-demo"
TIMEOUT_MS = 30_000  # per browser wait: the React app and plotly load a 6 MB bundle

DISTRIBUTIONS = {
    "stages": IntDistribution(2, 4),
    "stage1_width": CategoricalDistribution([16, 32, 64]),
    "lr": FloatDistribution(1e-3, 0.4, log=True),
}
# (stages, stage1_width, lr, accuracy after each epoch); the first four run to the end.
COMPLETE = [
    (2, 16, 0.05, [0.31, 0.42, 0.55, 0.61]),
    (3, 32, 0.1, [0.35, 0.48, 0.63, 0.72]),
    (4, 64, 0.02, [0.38, 0.52, 0.68, 0.79]),
    (3, 64, 0.2, [0.33, 0.47, 0.60, 0.70]),
]
PRUNED = [
    (2, 32, 0.3, [0.12, 0.15]),
    (4, 16, 0.001, [0.18]),
    (2, 64, 0.25, [0.21, 0.24]),
]


def _need_browser() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install playwright)")
    if missing:
        gate("the browser test needs " + " and ".join(missing), "SEARCH_REQUIRE_BROWSER")


def _artifact_dir(tmp_path: Path) -> Path:
    folder = os.environ.get("SEARCH_TEST_ARTIFACTS")
    path = Path(folder) if folder else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


def _make_store(url: str) -> list[tuple[int, str]]:
    """The study with its trials; returns (number, state as the dashboard shows it)."""
    study = optuna.create_study(storage=url, study_name=STUDY, direction="maximize")
    for state, rows in ((TrialState.COMPLETE, COMPLETE), (TrialState.PRUNED, PRUNED)):
        for stages, width, lr, curve in rows:
            study.add_trial(create_trial(
                state=state,
                # Optuna's tell() gives a pruned trial its last intermediate value too.
                value=curve[-1],
                params={"stages": stages, "stage1_width": width, "lr": lr},
                distributions=DISTRIBUTIONS,
                intermediate_values={epoch: acc for epoch, acc in enumerate(curve, 1)},
                user_attrs={"n_params": 150_000 * stages * width // 16,
                            "arch_summary": f"{stages} stages from width {width}"},
            ))
    return [(t.number, t.state.name.capitalize()) for t in study.get_trials(deepcopy=False)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(url: str, log_path: Path, name: str) -> Iterator[str]:
    """`search dashboard` on ``url`` while inside, once it lists study ``name``; its base
    URL."""
    port = _free_port()
    # The server logs every request: to a file, never to a pipe nobody reads.
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(SEARCH), "dashboard", "--storage", url, "--study-name", name,
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as response:
                    names = [s["study_name"] for s in json.loads(response.read())
                             ["study_summaries"]]
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the dashboard did not come up:\n" + log_path.read_text())
                time.sleep(0.25)
        assert names == [name]
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """A running `search dashboard` on a fresh store: (base URL, trials)."""
    _need_browser()  # before starting anything
    url = f"sqlite:///{tmp_path / 'study.db'}"
    trials = _make_store(url)
    with serving(url, tmp_path / "dashboard.log", STUDY) as base:
        yield base, trials


def _trial_list(page: Any) -> list[tuple[int, str]]:
    """(number, state) of each entry in the trials page's list, from its DOM."""
    rows = page.eval_on_selector_all(
        "main li.MuiListItem-root",
        """items => items.map(li => [
            (li.querySelector('.MuiListItemText-primary') || {}).textContent || '',
            Array.from(li.querySelectorAll('.MuiChip-label')).map(c => c.textContent),
        ])""",
    )
    found = []
    for title, chips in rows:
        match = re.fullmatch(r"Trial (\d+)", title.strip())
        if match:
            states = [c for c in chips if c != "Best Trial"]
            assert len(states) == 1, (title, chips)
            found.append((int(match.group(1)), states[0]))
    return found


def test_dashboard_shows_the_study_in_a_browser(
    dashboard: tuple[str, list[tuple[int, str]]], tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, trials = dashboard
    n_trials = len(COMPLETE) + len(PRUNED)
    assert len(trials) == n_trials
    artifacts = _artifact_dir(tmp_path)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    headless=True, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            page.on("pageerror", lambda err: errors.append(str(err)))

            # Home: / redirects to /dashboard, which lists the studies as cards: a link
            # to /dashboard/studies/<id> around a heading "<id>. <name>".
            page.goto(f"{base}/")
            expect(page).to_have_url(re.compile(r"/dashboard"))
            link = page.locator("main").get_by_role("link", name=re.compile(rf"\b{STUDY}\b"))
            expect(link).to_have_count(1)
            expect(link.get_by_role("heading")).to_have_text(re.compile(rf"^\d+\. {STUDY}$"))
            expect(link).to_have_attribute("href", re.compile(r"/dashboard/studies/\d+$"))
            link.click()

            # The study page: /dashboard/studies/<id>, with one plotly curve per trial in
            # the intermediate-values plot (pruned ones included: they have a value).
            expect(page).to_have_url(re.compile(r"/dashboard/studies/\d+$"))
            study_url = page.url
            expect(page.get_by_text("Intermediate values", exact=True)).to_be_visible()
            plot = page.locator("#graph-intermediate-values")
            expect(plot).to_have_class(re.compile(r"\bjs-plotly-plot\b"))  # plotly drew it
            expect(plot.locator("svg.main-svg").first).to_be_visible()
            expect(plot.locator(".legendtext")).to_have_count(n_trials)
            legend = sorted(t.strip() for t in plot.locator(".legendtext").all_text_contents())
            assert legend == sorted(f"trial #{n}" for n, _ in trials)
            assert plot.locator("g.trace.scatter").count() == n_trials
            shot = artifacts / "dashboard-study.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")

            # The trials page lists every trial with its state.
            page.goto(f"{study_url}/trials")
            expect(page.get_by_text(f"{n_trials} Trials", exact=True)).to_be_visible()
            expect(page.locator("main li.MuiListItem-root .MuiListItemText-primary")
                   ).to_have_count(n_trials)
            assert _trial_list(page) == trials
            assert {state for _, state in trials} == {"Complete", "Pruned"}

            # A pruned trial's detail shows its intermediate values, step by step.
            number = len(COMPLETE)  # the first pruned trial
            page.locator("main li.MuiListItem-root").get_by_text(
                f"Trial {number}", exact=True).click()
            expect(page.get_by_role("heading", name=re.compile(rf"^Trial {number} \("))
                   ).to_be_visible()
            curve = PRUNED[0][3]
            values = page.get_by_text("Intermediate Values", exact=True).locator("xpath=..")
            for step, acc in enumerate(curve, 1):
                expect(values).to_contain_text(f"{step} {acc}")
            shot = artifacts / "dashboard-trials.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
        finally:
            browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_dashboard_shows_a_real_searchs_objective_notes_and_artifacts(
    searched: Searched, promoted: Path, tmp_path: Path,
) -> None:
    """On the store of a real smoke search whose trial 1 was promoted: the objective's
    name, the study's attributes, trial 1's note (its architecture table) and the
    promoted run's files, served by the dashboard from the artifact store."""
    from playwright.sync_api import expect, sync_playwright

    _need_browser()
    shots = _artifact_dir(tmp_path)
    errors: list[str] = []
    with serving(searched.url, tmp_path / "dashboard.log", searched.name) as base, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    headless=True, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(f"{base}/dashboard")
            page.locator("main").get_by_role(
                "link", name=re.compile(rf"\b{searched.name}\b")).click()
            expect(page).to_have_url(re.compile(r"/dashboard/studies/\d+$"))
            study_url = page.url
            main = page.locator("main")
            # The objective is named, not "Objective 0"; the study's attributes are listed.
            expect(main).to_contain_text("val_acc")
            expect(main).not_to_contain_text("Objective 0")
            for key in ("budget", "40000", "space_fingerprint", "data_source"):
                expect(main).to_contain_text(key)
            page.screenshot(path=str(shots / "dashboard-real-study.png"), full_page=True)

            page.goto(f"{study_url}/trials")
            page.locator("main li.MuiListItem-root").get_by_text(
                "Trial 1", exact=True).click()
            expect(page.get_by_role("heading", name=re.compile(r"^Trial 1 \("))).to_be_visible()
            # The note, rendered: its heading and the architecture as a table.
            expect(main).to_contain_text("Trial 1: val_acc")
            expect(main.locator("table").filter(has_text="block type")).to_have_count(1)
            # The promoted run's files, each listed, and served from the artifact store.
            for name in ("curves.png", "confusion.png", "summary.json", "metrics.csv"):
                expect(main).to_contain_text(name)
            page.screenshot(path=str(shots / "dashboard-real-trial.png"), full_page=True)
            print(f"screenshots: {shots}/dashboard-real-*.png")
        finally:
            browser.close()
        study = optuna.load_study(study_name=searched.name, storage=searched.url)
        trial = study.trials[1]
        meta = next(m for m in trial_artifacts(trial) if m["filename"] == "summary.json")
        artifact = (f"{base}/artifacts/{study._study_id}/{trial._trial_id}/"
                    f"{meta['artifact_id']}")
        with urllib.request.urlopen(artifact, timeout=10) as response:
            assert response.read() == (promoted / "summary.json").read_bytes()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_dashboard_draws_a_multi_objective_studys_pareto_front(tmp_path: Path) -> None:
    """A real multi-objective search (val_acc against parameters, instant trainer): the
    study page's Pareto-front plot has one point per complete trial, and the front's
    trace holds exactly the trials no other beats on both objectives."""
    from playwright.sync_api import expect, sync_playwright

    from tests.search import trainers
    from tests.search.test_multi_objective import multi_file
    from tests.search.test_service import run

    _need_browser()
    url = f"sqlite:///{tmp_path / 'front.db'}"
    code, out = run(multi_file(tmp_path), url, "front", 10, baselines=False,
                    trainer=trainers.instant)
    assert code == 0, out
    complete = [t for t in optuna.load_study(study_name="front", storage=url).trials
                if t.state == TrialState.COMPLETE]
    front = [t for t in complete if not any(
        o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
        for o in complete)]
    assert 1 <= len(front) < len(complete)
    errors: list[str] = []
    with serving(url, tmp_path / "dashboard.log", "front") as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    headless=True, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(f"{base}/dashboard")
            page.locator("main").get_by_role("link", name=re.compile(r"\bfront\b")).click()
            expect(page).to_have_url(re.compile(r"/dashboard/studies/\d+$"))
            expect(page.get_by_text("Pareto Front", exact=True)).to_be_visible()
            plot = page.locator("#graph-pareto-front")
            expect(plot).to_have_class(re.compile(r"\bjs-plotly-plot\b"))
            expect(plot.locator("g.trace.scatter path.point")).to_have_count(len(complete))
            # The axes are the study's metric names, not "Objective 0/1".
            # Its axes are picked by the study's metric names, not "Objective 0/1".
            panel = page.locator("main").filter(has=plot).first
            text = re.sub(r"\s+", " ", panel.inner_text())
            assert "Objective X: val_acc" in text and "Objective Y: n_params" in text, text
            # Traces: unselected, infeasible, the front, the rest (optuna-dashboard's order).
            counts = [trace.locator("path.point").count()
                      for trace in plot.locator("g.trace.scatter").all()]
            assert len(front) in counts and sum(counts) == len(complete), counts
            page.screenshot(path=str(_artifact_dir(tmp_path) / "dashboard-pareto.png"),
                            full_page=True)
        finally:
            browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
