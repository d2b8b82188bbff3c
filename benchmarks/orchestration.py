"""Orchestration overhead of `search run`: trials per second when training takes no time.

Runs the built-in ``smoke`` study (TPE sampler, median pruner) through
`search.run.run_search` with the stub trainer `stub_trainer.instant`, which
reports one epoch and returns at once, over the grid

    executor {ray, local} x store {sqlite, postgres} x workers {1, 4}

so what is left is the search's own cost: starting workers (Ray, or spawned
processes), each worker importing torch and loading the cached data, the
sampler's proposals, the store's reads and writes, the pruner, the driver's
polling.

Method. Each cell runs twice, on fresh studies: a short run of N1 trials and a
long run of N2 trials (same store, same workers), and this --repeats times, in
whole rounds over the grid; each cell keeps its fastest short and fastest long
run (other work on the machine only ever slows a run down). N1 and N2 count the
trials that finished, which with several workers can exceed ``n_trials`` by a
few (each worker checks the count, then starts a trial). Reported per cell:

  end to end    N2 / t2: the whole `run_search` call of the long run, from
                loading the study file to the summary, start-up included
  steady state  (N2 - N1) / (t2 - t1): the start-up cost, the same in both runs,
                cancels, leaving the marginal cost of a trial (a slowly growing
                one: TPE and the worker's poll of the store read every trial so
                far, so it is the average over trials N1..N2)
  start-up      t2 - N2 / steady: the fixed cost per run, the line's intercept
  in run        from the long run's timestamps: finished trials / (last trial's
                end - first trial's start), the rate once the first worker got going
  first trial   seconds from the call to the first trial's start: the start-up
                (data hash and load in the driver, Ray or process start, worker
                imports and data load)
  after last    seconds from the last trial's end to the call's return: the
                wind-down (the driver's poll, workers exiting, and with Ray on a
                machine with fewer CPUs than workers, queued workers that start only
                once the others end, load everything and find the study done)

Apart from the grid: ``ray.init`` + ``ray.shutdown`` alone, as `run_ray` calls
them (a local instance), and `run_search` with ``n_trials=0`` (driver only: study
file, data from the cache, study creation; no worker starts).

Ray gives each worker ``os.cpu_count() // workers`` CPUs (at least 1), so on a
machine with fewer CPUs than workers only that many workers run at once; the
per-worker trial counts show it. The figures are only as good as the machine is
quiet: the record keeps the 1-minute load average before and after.

Postgres: a fresh database ``orch_bench_<hex>`` on the server at --pg (created
with psycopg2 through the admin database, dropped at the end). SQLite: one file
per run in a temporary folder. Worker processes find the stub through
``PYTHONPATH``, which is set to this folder before any executor starts (Ray
workers and spawned processes inherit the driver's environment).

Prints a table and writes benchmarks/results/orchestration-<date>.json.

    python benchmarks/orchestration.py [--n-short 10] [--n-long 60] [--repeats 2]
        [--workers 1,4] [--executors ray,local] [--stores sqlite,postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from record import save

HERE = Path(__file__).resolve().parent
SHARED_ARCHIVE = HERE.parents[1] / "shared" / "data" / "cifar10-jpeg.tar.gz"
TRAINER = "stub_trainer.instant"  # recorded in the figures
STUDY = "smoke"
PG_SERVER = "postgres@127.0.0.1:5432"


def put_stub_on_path() -> None:
    """This folder on PYTHONPATH, for the worker processes the executors start."""
    paths = [str(HERE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


@contextlib.contextmanager
def postgres_database(server: str, admin_db: str) -> Iterator[str]:
    """A fresh, empty Postgres database for the run (its SQLAlchemy URL), dropped after."""
    import psycopg2

    user, _, hostport = server.rpartition("@")
    host, _, port = hostport.partition(":")
    name = f"orch_bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(host=host, port=int(port or 5432), user=user or None,
                             dbname=admin_db)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        try:
            yield f"postgresql+psycopg2://{server}/{name}"
        finally:
            with admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
                cur.execute(f"DROP DATABASE IF EXISTS {name}")
    finally:
        admin.close()


def time_ray_init(repeats: int) -> list[float]:
    """Seconds for ``ray.init`` + ``ray.shutdown``, with the arguments `run_ray` uses."""
    import ray

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False,
                 logging_level=logging.ERROR)
        ray.shutdown()
        times.append(time.perf_counter() - start)
    return times


class Runner:
    """`run_search` calls on fresh studies of one store, timed, with their trials read back."""

    def __init__(self, store: str, tmp: Path, pg_url: str | None, data: str) -> None:
        self.store, self.tmp, self.pg_url, self.data = store, tmp, pg_url, data
        self.count = 0

    def url(self) -> str:
        self.count += 1
        if self.store == "sqlite":
            return f"sqlite:///{self.tmp / f'run{self.count}.db'}"
        assert self.pg_url is not None
        return self.pg_url

    def run(self, executor: str, workers: int, n_trials: int) -> dict[str, Any]:
        from stub_trainer import instant

        from search.record import finished
        from search.run import RunOptions, run_search
        from search.storage import open_storage

        url = self.url()
        name = f"orch-{executor}-{self.store}-{workers}w-{n_trials}-{secrets.token_hex(3)}"
        opts = RunOptions(study=STUDY, storage=url, study_name=name, n_trials=n_trials,
                          workers=workers, executor=executor, data=self.data, device="cpu",
                          baselines=False, trainer=instant)
        out = io.StringIO()
        wall_start = dt.datetime.now()
        start = time.perf_counter()
        code = run_search(opts, out=out)
        seconds = time.perf_counter() - start
        trials = optuna.load_study(study_name=name,
                                   storage=open_storage(url, heartbeat=False)).trials
        row: dict[str, Any] = {"n_trials": n_trials, "exit_code": code,
                               "seconds": round(seconds, 3)}
        states: dict[str, int] = {}
        per_worker: dict[str, int] = {}
        for t in trials:
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
            key = str(t.user_attrs.get("worker", "?"))
            per_worker[key] = per_worker.get(key, 0) + 1
        row["states"] = dict(sorted(states.items()))
        row["trials_per_worker"] = dict(sorted(per_worker.items()))
        row["finished"] = sum(finished(t) for t in trials)
        starts = [t.datetime_start for t in trials if t.datetime_start]
        ends = [t.datetime_complete for t in trials if t.datetime_complete]
        if starts and ends:
            row["first_trial_after_s"] = round((min(starts) - wall_start).total_seconds(), 3)
            span = (max(ends) - min(starts)).total_seconds()
            row["in_run_trials_per_s"] = round(row["finished"] / span, 2) if span > 0 else None
            # The wind-down: workers noticing the study is done, or starting only to see it.
            end = wall_start + dt.timedelta(seconds=seconds)
            row["after_last_trial_s"] = round((end - max(ends)).total_seconds(), 3)
        if code != 0:
            row["output_tail"] = out.getvalue()[-2000:]
        return row


def summarize_cell(executor: str, store: str, workers: int, n_long: int,
                   shorts: list[dict[str, Any]], longs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's figures from its fastest short and fastest long run."""
    short = min(shorts, key=lambda r: r["seconds"])
    long = min(longs, key=lambda r: r["seconds"])
    # Trials that ran, not n_trials: several workers can overshoot it by a few.
    ran_short, ran_long = short["finished"], long["finished"]
    dt_s = long["seconds"] - short["seconds"]
    steady = (ran_long - ran_short) / dt_s if dt_s > 0 else None
    return {
        "executor": executor, "store": store, "workers": workers,
        "n_trials": n_long, "trials_finished": ran_long, "seconds": long["seconds"],
        "trials_per_s": round(ran_long / long["seconds"], 2),
        "steady_trials_per_s": round(steady, 2) if steady else None,
        "startup_s": round(long["seconds"] - ran_long / steady, 2) if steady else None,
        "in_run_trials_per_s": long.get("in_run_trials_per_s"),
        "first_trial_after_s": long.get("first_trial_after_s"),
        "after_last_trial_s": long.get("after_last_trial_s"),
        "seconds_all_short": [r["seconds"] for r in shorts],
        "seconds_all_long": [r["seconds"] for r in longs],
        "runs": {"short": short, "long": long},
    }


def driver_only(runner: Runner, repeats: int) -> list[float]:
    """Seconds of `run_search` with ``n_trials=0``: no worker starts."""
    return [runner.run("local", 1, 0)["seconds"] for _ in range(repeats)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-short", type=int, default=10, help="trials of the short run")
    parser.add_argument("--n-long", type=int, default=60, help="trials of the long run")
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--executors", default="ray,local")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--data", default=str(SHARED_ARCHIVE))
    parser.add_argument("--pg", default=PG_SERVER, help="user@host:port of the Postgres server")
    parser.add_argument("--pg-admin-db", default="test",
                        help="existing database to connect to for CREATE/DROP DATABASE")
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds over the grid; each cell keeps its fastest runs")
    parser.add_argument("--ray-init-repeats", type=int, default=3)
    args = parser.parse_args()
    if args.n_long <= args.n_short:
        parser.error("--n-long must exceed --n-short")

    put_stub_on_path()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workers = [int(w) for w in args.workers.split(",")]
    executors = args.executors.split(",")
    stores = args.stores.split(",")
    began = time.perf_counter()
    load_before = os.getloadavg()

    driver: dict[str, float] = {}
    ray_init: list[float] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orch-bench-")))
        pg_url = (stack.enter_context(postgres_database(args.pg, args.pg_admin_db))
                  if "postgres" in stores else None)
        runners = {store: Runner(store, tmp, pg_url, args.data) for store in stores}
        for store, runner in runners.items():
            times = driver_only(runner, 2)  # the first also warms the data cache
            driver[store] = round(min(times), 3)
            print(f"driver only ({store}): {min(times):.2f} s", file=sys.stderr)
        if "ray" in executors:
            ray_init = [round(t, 3) for t in time_ray_init(args.ray_init_repeats)]
            print(f"ray.init + shutdown: {ray_init} s", file=sys.stderr)
        cells = [(e, s, k) for e in executors for s in stores for k in workers]
        runs: dict[tuple[str, str, int], dict[int, list[dict[str, Any]]]] = {
            c: {args.n_short: [], args.n_long: []} for c in cells}
        for round_ in range(args.repeats):  # whole rounds, so a busy spell hits no one cell
            for executor, store, k in cells:
                for n in (args.n_short, args.n_long):
                    run = runners[store].run(executor, k, n)
                    runs[executor, store, k][n].append(run)
                    print(f"round {round_ + 1} {executor}/{store}/{k}w: {run['finished']} "
                          f"trials in {run['seconds']:.1f} s, exit code {run['exit_code']}, "
                          f"per worker {run['trials_per_worker']}", file=sys.stderr)
        rows = [summarize_cell(e, s, k, args.n_long, runs[e, s, k][args.n_short],
                               runs[e, s, k][args.n_long]) for e, s, k in cells]
    total = time.perf_counter() - began

    print(f"\n{'executor':<9}{'store':<10}{'workers':>7}{'trials':>7}{'seconds':>9}"
          f"{'trials/s':>9}{'steady/s':>9}{'in run/s':>9}{'start-up s':>11}"
          f"{'1st trial s':>12}{'after last s':>13}  trials per worker")
    for row in rows:
        long = row["runs"]["long"]
        flag = "" if long["exit_code"] == 0 and row["runs"]["short"]["exit_code"] == 0 \
            else "  EXIT CODE != 0"
        print(f"{row['executor']:<9}{row['store']:<10}{row['workers']:>7}{row['trials_finished']:>7}"
              f"{row['seconds']:>9.1f}{row['trials_per_s']:>9.2f}"
              f"{_num(row['steady_trials_per_s']):>9}{_num(row['in_run_trials_per_s']):>9}"
              f"{_num(row['startup_s']):>11}{_num(row['first_trial_after_s']):>12}"
              f"{_num(row['after_last_trial_s']):>13}  "
              f"{long['trials_per_worker']}{flag}")
    if ray_init:
        print(f"ray.init + ray.shutdown alone: median {statistics.median(ray_init):.2f} s "
              f"over {len(ray_init)}")
    print("run_search with n_trials=0 (driver only): "
          + ", ".join(f"{s} {t:.2f} s" for s, t in driver.items()))
    print(f"whole benchmark: {total:.0f} s; 1-minute load average before {load_before[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}")

    import ray

    save("orchestration", "orchestration", {
        "study": STUDY,
        "trainer": TRAINER,
        "device": "cpu",
        "n_short": args.n_short,
        "n_long": args.n_long,
        "repeats": args.repeats,
        "ray_init_shutdown_s": ray_init,
        "driver_only_s": driver,
        "total_s": round(total, 1),
        # Other work on the machine skews the figures: the 1-minute load around the run.
        "load_avg_1min": {"before": round(load_before[0], 2),
                          "after": round(os.getloadavg()[0], 2)},
        "results": rows,
    }, optuna=optuna.__version__, ray=ray.__version__, sqlalchemy=sqlalchemy.__version__)
    return 0


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
