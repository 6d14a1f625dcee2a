"""Running oxy on a Dask cluster: the same stages over sensor partitions, the same results.

``oxy --scheduler tcp://HOST:8786 score`` (or ``$OXY_SCHEDULER``) connects to a running Dask
scheduler; ``--scheduler local[:N]`` starts a ``LocalCluster`` of N worker processes here
(``[cluster] local_workers`` by default). ``score``, ``train``, ``forecast`` and ``ingest``
then map their partitions over the workers:

* **score** — the site stage's groups of buckets (hourly medians) and then each batch of
  buckets (:func:`engine.anomaly.score_job`);
* **train** — each bucket's training, validation and backtest pairs; the model is fitted on
  the gathered pairs (one ``lgb.train``, as embedded) up to ``[cluster] dask_train_rows``
  training pairs, and by ``lightgbm.dask`` across the workers above it;
* **forecast** — each bucket's forecast and status partitions;
* **ingest** — each file's parsing, validation and staging (the commit, which compares with
  what earlier files committed, stays in file order here).

The rules that keep the embedded engine's guarantees:

* a worker reads the lake and writes only under the warehouse's ``.staging/``, through a
  :class:`~engine.warehouse.StagedWarehouse`; it never opens the catalog. Every worker must
  see the warehouse at the same path (a shared file system): :func:`connect` checks it;
* this process is the one writer: it holds the writer lock for the whole run, reads from the
  catalog what the workers need (as frames and file lists), and commits what they return —
  files moved into place and catalog rows — in one transaction at the end;
* a worker killed mid-run: Dask runs its partitions again elsewhere. A partition run twice
  only leaves a second staging folder (swept by the next writer): only this process commits,
  once per partition, after every partition is back;
* a lost scheduler: the command fails with one line before anything is committed, so the
  warehouse is as it was before the run.

Dask moves task arguments and results between processes with its own (pickle-based)
protocol, in memory; nothing oxy stores on disk is pickled (models stay LightGBM text).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from engine import OxyError, __version__
from engine.config import Config
from engine.progress import bar as progress_bar

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # the cluster extra is not installed: connect() says so
    WorkerPlugin = object  # type: ignore[assignment,misc]

SCHEDULER_ENV = "OXY_SCHEDULER"
R = TypeVar("R")
_LOCAL = re.compile(r"^local(?::(\d+))?$")
_ADDRESS = re.compile(r"^(tcp|tls|inproc|ws|wss|ucx)://\S+$")


class Executor(Protocol):
    """Maps a stage's worker function over its partitions (``engine.cluster.DaskExecutor``)."""

    def map(self, fn: Callable[..., R], jobs: Sequence[tuple[Any, ...]], *, label: str) -> list[R]:
        """``[fn(*job) for job in jobs]``, computed on the workers, in the jobs' order."""
        ...


@dataclass(frozen=True)
class SchedulerSpec:
    """Where to run: a scheduler ``address``, or ``local_workers`` processes here."""

    address: str | None = None
    local_workers: int | None = None

    @property
    def label(self) -> str:
        return self.address or f"local:{self.local_workers}"


def parse_scheduler(text: str, config: Config) -> SchedulerSpec:
    """``local``, ``local:N`` or a scheduler address (``tcp://HOST:PORT``, ``tls://...``).

    >>> parse_scheduler("local:3", Config.load())
    SchedulerSpec(address=None, local_workers=3)
    >>> parse_scheduler("tcp://10.0.0.5:8786", Config.load()).address
    'tcp://10.0.0.5:8786'
    """
    text = text.strip()
    local = _LOCAL.match(text)
    if local:
        n = int(local.group(1)) if local.group(1) else int(config["cluster"]["local_workers"])
        if n < 1:
            raise OxyError(f"--scheduler {text}: a local cluster needs at least 1 worker")
        return SchedulerSpec(local_workers=n)
    if _ADDRESS.match(text):
        return SchedulerSpec(address=text)
    raise OxyError(
        f"--scheduler {text!r}: expected local, local:N or a scheduler address such as "
        "tcp://HOST:8786"
    )


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise OxyError(
            "--scheduler needs dask.distributed, which is not installed: pip install 'oxy[cluster]'"
        ) from None
    return distributed


class LocalWorkerOutput(WorkerPlugin):  # type: ignore[misc]
    """On the workers of a cluster started here (``local[:N]``), which share this process's
    stdout: what they print goes to stderr (this process's stdout is a command's result, e.g.
    ``--json``). Set up again on a restarted worker. LightGBM's native log lines need it:
    its log callback and level are per thread, so ``lightgbm.dask``'s network set-up on a
    worker's task thread prints to stdout whatever Python logger is registered."""

    def setup(self, worker: Any) -> None:
        import sys

        sys.stdout.flush()
        os.dup2(2, 1)


class _LightGBMLog:
    """LightGBM's Python-side logger here: info lines (``lightgbm.dask``'s "Finding random
    open ports for workers") to the ``lightgbm`` logger instead of stdout, its default;
    warnings as warnings, as by default."""

    def info(self, msg: str) -> None:
        logging.getLogger("lightgbm").info(msg)

    def warning(self, msg: str) -> None:
        warnings.warn(msg, stacklevel=3)


def worker_check(root: str) -> tuple[str, bool, bool]:
    """Run on every worker by :func:`connect`: oxy's version there, whether the warehouse
    root is a folder there and whether its ``.staging/`` can be written."""
    staging = os.path.join(root, ".staging")
    writable = os.path.isdir(root) and (
        os.access(staging, os.W_OK) if os.path.isdir(staging) else os.access(root, os.W_OK)
    )
    return __version__, os.path.isdir(root), writable


class DaskExecutor:
    """:class:`Executor` over a ``distributed.Client``: one task per partition, a progress bar
    over partitions on a terminal, and a lost scheduler or a partition that keeps killing its
    workers turned into one clear :class:`OxyError`."""

    def __init__(self, client: Any, spec: SchedulerSpec, *, progress: bool = False) -> None:
        self.client = client
        self.spec = spec
        self.progress = progress
        self.tasks = 0

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def map(self, fn: Callable[..., R], jobs: Sequence[tuple[Any, ...]], *, label: str) -> list[R]:
        futures = self.submit(fn, jobs, label=label)
        try:
            return self.gather(futures, label=label)
        finally:
            self.release(futures)

    def submit(
        self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], *, label: str
    ) -> list[Any]:
        """One task per job, waited for (a progress bar over them): the futures, whose results
        stay on the workers until gathered."""
        distributed = _import_distributed()
        if not jobs:
            return []
        run = uuid.uuid4().hex[:8]
        name = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
        futures: list[Any] = []
        with self._faults(label, futures):
            for i, job in enumerate(jobs):
                key = f"oxy-{name}-{i:05d}-{run}"
                futures.append(self.client.submit(fn, *job, key=key, pure=False))
            self.tasks += len(futures)
            bar = progress_bar(
                total=len(futures), desc=label, unit="partition", enabled=self.progress
            )
            try:
                for future in distributed.as_completed(futures, loop=self.client.loop):
                    if future.status == "error":
                        future.result()  # raises the task's own error
                    bar.update(1)
            finally:
                bar.close()
        return futures

    def gather(self, futures: Sequence[Any], *, label: str) -> list[Any]:
        """The results of ``futures``, here, in their order."""
        with self._faults(label, futures):
            return list(self.client.gather(list(futures)))

    def release(self, futures: Sequence[Any]) -> None:
        for future in futures:
            with contextlib.suppress(Exception):
                future.release()

    @contextlib.contextmanager
    def _faults(self, label: str, futures: Sequence[Any]) -> Iterator[None]:
        """Dask's failures of a stage as one clear :class:`OxyError` (the task's own errors,
        an OxyError among them, as they are)."""
        distributed = _import_distributed()
        try:
            yield
        except OxyError:
            self._cancel(futures)
            raise
        except distributed.KilledWorker as exc:
            self._cancel(futures)
            raise OxyError(
                f"{label}: a partition killed every worker it ran on ({exc}); too little "
                "memory per worker? Nothing was committed"
            ) from None
        except (CancelledError, OSError, TimeoutError) as exc:
            self._cancel(futures)
            if self._scheduler_lost(exc):
                raise OxyError(
                    f"{label}: lost the Dask scheduler at {self.spec.label} "
                    f"({type(exc).__name__}); nothing was committed, the warehouse is as "
                    "before the run"
                ) from None
            raise
        except BaseException:
            self._cancel(futures)
            raise

    def _cancel(self, futures: Sequence[Any]) -> None:
        for future in futures:
            if not future.done():
                with contextlib.suppress(Exception):
                    future.cancel()

    def _scheduler_lost(self, exc: BaseException) -> bool:
        distributed = _import_distributed()
        if isinstance(exc, distributed.comm.CommClosedError | CancelledError | TimeoutError):
            return True
        return self.client.status not in ("running", "connecting")


@contextlib.contextmanager
def connect(
    scheduler: str,
    warehouse_root: str | os.PathLike[str],
    config: Config,
    *,
    progress: bool = False,
    echo: Callable[[str], None] = print,
) -> Iterator[DaskExecutor]:
    """A :class:`DaskExecutor` on ``scheduler`` (see :func:`parse_scheduler`), checked: every
    worker runs this oxy version and sees ``warehouse_root``. Prints the dashboard link. A
    local cluster is stopped on exit.

    Examples
    --------
    >>> with connect("local:2", "warehouse", Config.load()) as executor:  # doctest: +SKIP
    ...     score(Warehouse("warehouse"), executor=executor)
    """
    spec = parse_scheduler(scheduler, config)
    distributed = _import_distributed()
    cfg = config["cluster"]
    timeout = float(cfg["connect_timeout_s"])
    with contextlib.ExitStack() as stack:
        try:
            if spec.local_workers is not None:
                cluster = stack.enter_context(
                    distributed.LocalCluster(
                        n_workers=spec.local_workers,
                        threads_per_worker=int(cfg["local_threads"]),
                        processes=True,
                        memory_limit=cfg["local_memory_limit"],
                        dashboard_address=str(cfg["dashboard_address"]),
                        silence_logs=logging.ERROR,
                    )
                )
                client = stack.enter_context(distributed.Client(cluster, timeout=timeout))
                client.register_plugin(LocalWorkerOutput(), name="oxy-local-worker-output")
            else:
                client = stack.enter_context(distributed.Client(spec.address, timeout=timeout))
        except (OSError, TimeoutError) as exc:
            raise OxyError(
                f"cannot reach the Dask scheduler at {spec.label} within {timeout:g} s: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError):
            raise OxyError(
                f"the Dask cluster at {spec.label} has no worker (none joined within {timeout:g} s)"
            ) from None
        root = os.fspath(os.path.abspath(warehouse_root))
        os.makedirs(root, exist_ok=True)  # every command run on a cluster writes the warehouse
        try:
            checks = client.run(worker_check, root)
        except Exception as exc:  # a worker that cannot import oxy fails to unpickle the check
            raise OxyError(
                f"the workers of {spec.label} cannot run oxy ({type(exc).__name__}: {exc}); "
                f"install oxy {__version__} (with its cluster extra) on every worker"
            ) from None
        if not checks:
            raise OxyError(f"the Dask cluster at {spec.label} has no worker")
        for worker, (version, sees, writable) in sorted(checks.items()):
            if version != __version__:
                raise OxyError(
                    f"worker {worker} runs oxy {version}, this client {__version__}: "
                    "install the same oxy on every worker"
                )
            if not sees:
                raise OxyError(
                    f"worker {worker} does not see the warehouse at {root}: workers need it "
                    "on a shared file system mounted at the same path"
                )
            if not writable:
                raise OxyError(
                    f"worker {worker} cannot write {root}/.staging: workers stage their "
                    "Parquet there"
                )
        echo(f"dask: {len(checks)} worker(s) at {spec.label}; dashboard {client.dashboard_link}")
        yield DaskExecutor(client, spec, progress=progress)


# -- training on a cluster ------------------------------------------------------------------


def bucket_pairs_job(
    warehouse: Any,
    bucket: int,
    files: list[str],
    excluded: Any,
    s: dict[str, Any],
    timezones: dict[str, str],
    bounds: tuple[int, int, int],
) -> Any:
    """:func:`engine.forecast.bucket_pairs` of one bucket on a worker (in-memory DuckDB)."""
    from engine.forecast import bucket_pairs, readings_of_files

    con = warehouse.connect_memory()
    try:
        readings = readings_of_files(con, files, excluded=excluded)
    finally:
        con.close()
    return bucket_pairs(readings, bucket, s, timezones, bounds)


def _sizes(part: Any) -> tuple[int, int, int, int] | None:
    return None if part is None else (part[0].height, part[1].height, part[2].height, part[3])


def _nth(part: Any, i: int) -> Any:
    return part[i]


def training_pairs(
    executor: DaskExecutor,
    warehouse: Any,
    files: dict[int, list[str]],
    in_bucket: dict[str, int],
    excluded: Any,
    s: dict[str, Any],
    timezones: dict[str, str],
    bounds: tuple[int, int, int],
    echo: Callable[[str], None],
) -> tuple[Any, Any, Any]:
    """``(train, valid, backtest)`` pairs built per bucket on the workers, concatenated in
    bucket order as the embedded :func:`engine.forecast.training_frames` does. ``train`` is a
    frame (gathered) up to ``[cluster] dask_train_rows`` pairs, else a
    :class:`DistributedPairs` that stays on the workers."""
    import polars as pl

    buckets = sorted(files)
    excluded = excluded.with_columns(
        bucket=pl.col("sensor_id").replace_strict(in_bucket, default=-1, return_dtype=pl.Int64)
    )
    by_bucket = excluded.partition_by("bucket", as_dict=True, include_key=False)
    empty = excluded.clear().drop("bucket")
    jobs = [
        (warehouse, b, files[b], by_bucket.get((b,), empty), s, timezones, bounds) for b in buckets
    ]
    futures = executor.submit(bucket_pairs_job, jobs, label="train: pairs")
    try:
        client = executor.client
        sizes = executor.gather([client.submit(_sizes, f) for f in futures], label="train")
        kept = [(b, f, n) for b, f, n in zip(buckets, futures, sizes, strict=True) if n]
        for b, _, n in kept:
            echo(f"  bucket {b:02d}: {n[3]} sensor(s)")
        if not kept:
            raise OxyError("no readings to train on")
        rows = sum(n[0] for _, _, n in kept)
        threshold = int(warehouse.config["cluster"]["dask_train_rows"])
        if rows <= threshold:
            parts = executor.gather([f for _, f, _ in kept], label="train")
            train, valid, test = (pl.concat([p[i] for p in parts]) for i in range(3))
            return train, valid, test
        echo(
            f"{rows:,} training pairs > [cluster] dask_train_rows {threshold:,}: "
            "lightgbm.dask fits across the workers"
        )
        valid, test = (
            pl.concat(
                executor.gather([client.submit(_nth, f, i) for _, f, _ in kept], label="train")
            )
            for i in (1, 2)
        )
        train = DistributedPairs(
            executor, [client.submit(_nth, f, 0) for _, f, _ in kept], [n[0] for _, _, n in kept]
        )
        return train, valid, test
    finally:
        executor.release(futures)


def _matrix(frame: Any) -> Any:
    from engine.features import feature_matrix

    return feature_matrix(frame)


def _target(frame: Any) -> Any:
    return frame["target_z"].to_numpy()


def _error_sums(frame: Any, model_text: str, best: int) -> Any:
    """Per sensor of one partition: what :func:`engine.forecast.error_metrics` adds up."""
    import lightgbm as lgb
    import polars as pl

    from engine.features import feature_matrix

    booster = lgb.Booster(model_str=model_text)
    z = booster.predict(feature_matrix(frame), num_iteration=best or None)
    yhat = frame["baseline"].to_numpy() + z * frame["scale"].to_numpy()
    rows = frame.with_columns(pl.Series("yhat", yhat)).filter(
        pl.col("yhat").is_not_null() & pl.col("actual").is_not_null()
    )
    e = pl.col("actual") - pl.col("yhat")
    return rows.group_by("sensor_id").agg(
        abs_sum=e.abs().sum(),
        sq_sum=(e**2).sum(),
        n=pl.len(),
        mase_scale=pl.col("mase_scale").first(),
    )


class DistributedPairs:
    """Training pairs that stay on the workers, one partition per bucket: the model is fitted
    by ``lightgbm.dask`` (data-parallel across the workers) and the training metrics are summed
    per partition there. ``lightgbm.dask`` has no early stopping: every round is grown and the
    model is cut at the round of least validation MAE (the embedded fit stops
    ``early_stopping_rounds`` after it). The model is not bit-identical to the embedded one
    (feature bins and histograms are computed per worker)."""

    def __init__(self, executor: DaskExecutor, futures: list[Any], rows: list[int]) -> None:
        self.executor = executor
        self.futures = futures
        self.rows = rows

    def __len__(self) -> int:
        return sum(self.rows)

    def fit(self, model: Any, valid: Any) -> Any:
        """The booster of ``model`` (a :class:`engine.forecast.DirectForecaster`) fitted on
        these pairs, validated on ``valid`` (a frame), cut at its best round."""
        import dask
        import dask.array as da
        import lightgbm as lgb
        import numpy as np
        from lightgbm.dask import DaskLGBMRegressor

        from engine.features import FEATURES, feature_matrix

        client = self.executor.client
        width = len(FEATURES)
        xs = [client.submit(_matrix, f) for f in self.futures]
        ys = [client.submit(_target, f) for f in self.futures]
        x = da.concatenate(
            [
                da.from_delayed(dask.delayed(f), shape=(n, width), dtype="float64")
                for f, n in zip(xs, self.rows, strict=True)
            ]
        )
        y = da.concatenate(
            [
                da.from_delayed(dask.delayed(f), shape=(n,), dtype="float64")
                for f, n in zip(ys, self.rows, strict=True)
            ]
        )
        # each worker trains with its own threads: lightgbm.dask sets them
        params = {k: v for k, v in model.params.items() if k != "num_threads"}
        regressor = DaskLGBMRegressor(
            client=client, n_estimators=model.num_boost_round, verbose=-1, **params
        )
        lgb.register_logger(_LightGBMLog())
        with self.executor._faults("train: lightgbm.dask", xs + ys), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored")
            regressor.fit(x, y, feature_name=list(FEATURES))
        self.executor.release(xs + ys)
        booster = regressor.booster_
        # the validation MAE after each round, here (lightgbm.dask evaluates an eval set on
        # the workers that hold a part of it only): each tree's output added in turn
        xv, yv = feature_matrix(valid), valid["target_z"].to_numpy()
        z, curve = np.zeros(len(yv)), []
        for i in range(booster.num_trees()):
            z += booster.predict(xv, start_iteration=i, num_iteration=1)
            curve.append(float(np.mean(np.abs(z - yv))))
        booster.best_iteration = int(np.argmin(curve)) + 1 if curve else 0
        return booster

    def metrics(self, model: Any) -> dict[str, float]:
        """:func:`engine.forecast.error_metrics` of ``model`` on these pairs, from per-sensor
        sums computed on the workers."""
        import math

        import polars as pl

        booster = model.booster_
        text = booster.model_to_string()
        client = self.executor.client
        parts = [client.submit(_error_sums, f, text, booster.best_iteration) for f in self.futures]
        sums = pl.concat(self.executor.gather(parts, label="train: metrics"))
        n = int(sums["n"].sum())
        if n == 0:
            return {"mae": math.nan, "rmse": math.nan, "mase": math.nan, "n": 0}
        mase = (sums["abs_sum"] / sums["n"] / sums["mase_scale"]).drop_nans().mean()
        return {
            "mae": float(sums["abs_sum"].sum() / n),
            "rmse": float(math.sqrt(sums["sq_sum"].sum() / n)),
            "mase": float(mase) if mase is not None else math.nan,  # type: ignore[arg-type]
            "n": n,
        }
