"""`oxy`: the command line. Each command parses its arguments and calls one engine function.

Engine errors (`engine.OxyError`) become one clear line and exit code 1, never a traceback;
so do the errors no engine function turned into one (a full disk, a database error, a bug:
`OXY_DEBUG=1` shows its traceback). Warnings of the engine (the `oxy` logger: a file that is
not as the catalog recorded it, …) are printed to stderr as `warning: …` lines.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from engine import OxyError, __version__
from engine.config import Config
from engine.progress import totals_line, wanted, warehouse_totals
from engine.warehouse import Warehouse


class Context:
    """What every command gets: the effective config and the warehouse."""

    def __init__(
        self,
        warehouse: Path,
        config: Path | None,
        quiet: bool,
        as_json: bool,
        *,
        config_from_env: bool = False,
        scheduler: str | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.config_path = config
        self.config_from_env = config_from_env
        self.warehouse_path = warehouse
        self.quiet = quiet
        self.as_json = as_json

    @functools.cached_property
    def config(self) -> Config:
        try:
            return Config.load(self.config_path)
        except OxyError as exc:
            if self.config_from_env:  # say where a path nobody typed came from
                raise OxyError(f"{exc} (from $OXY_CONFIG)") from None
            raise

    @functools.cached_property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.warehouse_path, self.config)

    @property
    def writable_warehouse(self) -> Warehouse:
        """The warehouse of a command that writes it: checked writable before any work."""
        self.warehouse.require_writable()
        return self.warehouse

    @contextlib.contextmanager
    def executor(self) -> Iterator[Any]:
        """The Dask executor of ``--scheduler`` (None: run here, embedded)."""
        if not self.scheduler:
            yield None
            return
        from engine.cluster import connect

        with connect(
            self.scheduler,
            self.warehouse.root,
            self.config,
            progress=self.progress,
            echo=lambda line: click.echo(line, err=True) if not self.quiet else None,
        ) as executor:
            yield executor

    @property
    def progress(self) -> bool:
        """Progress bars on stderr: for a person at a terminal, never under --quiet/--json."""
        return wanted(quiet=self.quiet, as_json=self.as_json)

    def totals(self, *extra: str) -> str:
        """The warehouse-wide line that ends a summary (after what this run did)."""
        with self.warehouse.reader() as con:
            return totals_line(warehouse_totals(con), *extra)

    def echo(self, message: str = "", **kwargs: Any) -> None:
        """Human output (suppressed by --quiet and --json)."""
        if not (self.quiet or self.as_json):
            click.echo(message, **kwargs)

    def result(self, payload: Any, human: Callable[[], None] | None = None) -> None:
        """A command's final result: JSON under --json, else the human rendering."""
        if self.as_json:
            click.echo(json.dumps(payload, default=str, indent=2))
        elif human is not None and not self.quiet:
            human()


pass_ctx = click.make_pass_decorator(Context)


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text[:500]


# A file a command cannot write or read where the user put it (a read-only mount, a folder
# owned by another uid, a full disk): the user's to fix, so one line, not a traceback.
_USER_FILE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def file_error_message(exc: OSError) -> str | None:
    """One line for a filesystem error the user can fix, or None for anything else."""
    if exc.errno not in _USER_FILE_ERRNOS or not exc.filename:
        return None
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot access {exc.filename}: {exc.strerror} for uid {os.getuid()}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on device ({exc.filename}): free some space and run the command again"
        )
    return f"cannot write {exc.filename}: {exc.strerror}"


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every error into a one-line `Error: ...` and exit code 1 (130 on Ctrl-C).

    Engine errors say what to do; an OS or database error the engine did not expect is named
    with its cause; anything else is a bug of oxy's, one line too (`OXY_DEBUG=1` re-raises it
    with its traceback). A closed stdout (`oxy sql … | head`) ends quietly."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OxyError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except BrokenPipeError:
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more reaches it
            sys.exit(0)
        except OSError as exc:
            if os.environ.get("OXY_DEBUG"):
                raise
            message = file_error_message(exc) or _unexpected(exc)
            raise click.ClickException(message) from None
        except (Exception, BaseException) as exc:  # a library's panic is a BaseException
            if os.environ.get("OXY_DEBUG") or isinstance(exc, GeneratorExit):
                raise
            raise click.ClickException(_unexpected(exc)) from None

    return wrapper


def _unexpected(exc: BaseException) -> str:
    import duckdb

    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"no space left on device{where}: free some space and run the command again"
        return f"{exc.strerror or exc}{where}"
    if isinstance(exc, duckdb.Error):
        return f"database error: {_one_line(exc)}"
    return (
        f"internal error (a bug in oxy, please report it): {type(exc).__name__}: "
        f"{_one_line(exc)} (OXY_DEBUG=1 shows the traceback)"
    )


def _binary_stdout() -> Any:
    """stdout as a binary stream (its buffer), for output streamed a batch at a time."""
    sys.stdout.flush()
    return getattr(sys.stdout, "buffer", None) or _TextAsBytes(sys.stdout)


class _TextAsBytes:
    """A text stream that takes bytes (UTF-8), for a stdout without a buffer."""

    def __init__(self, text: Any) -> None:
        self.text = text

    def write(self, data: bytes) -> int:
        self.text.write(data.decode("utf-8"))
        return len(data)

    def flush(self) -> None:
        self.text.flush()


class _WarningLines(logging.Handler):
    """The `oxy` logger's warnings as `warning: …` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"warning: {record.getMessage()}", err=True)


def _print_warnings() -> None:
    logger = logging.getLogger("oxy")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        logger.addHandler(_WarningLines(level=logging.WARNING))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--warehouse",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("OXY_WAREHOUSE") or "warehouse",
    show_default="./warehouse or $OXY_WAREHOUSE",
    help="Warehouse root directory.",
)
@click.option(
    "--config",
    type=click.Path(path_type=Path),  # a folder or a missing file: Config.load says so
    envvar="OXY_CONFIG",
    show_envvar=True,
    help="TOML configuration (overrides built-in defaults; declares [sources.NAME]).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    envvar="OXY_SCHEDULER",
    show_envvar=True,
    help="Run score, train, forecast and ingest on a Dask cluster: a scheduler address "
    "(tcp://HOST:8786) or local[:N] (N worker processes here). Default: embedded.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")
@click.version_option(__version__, prog_name="oxy")
@click.pass_context
def oxy(
    ctx: click.Context,
    warehouse: Path,
    config: Path | None,
    scheduler: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Dissolved-oxygen analytics: ingest, score anomalies, forecast a week ahead.

    \b
    Example:
      oxy demo-data demo_data && oxy --config demo_data/sources.toml ingest \\
          demo_data/seacage.csv --source seacage
    """
    from_env = ctx.get_parameter_source("config") is click.core.ParameterSource.ENVIRONMENT
    ctx.obj = Context(
        warehouse, config, quiet, as_json, config_from_env=from_env, scheduler=scheduler
    )
    _print_warnings()


# --- demo-data commands -------------------------------------------------------------


@oxy.command("demo-data")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--sensors-per-site",
    type=click.IntRange(min=1),
    help="Sensors at each of the 5 sites: total sensors = 5 x N.  [default: 2]",
)
@click.option("--days", type=click.IntRange(min=1), help="Days of minute data.  [default: 35]")
@click.option("--seed", type=int, help="Random seed (same seed, same data).  [default: 7]")
@click.option(
    "--clean-days",
    type=click.IntRange(min=0),
    help="Final days without injected anomalies.  [default: 7]",
)
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M"]),
    help="First minute, UTC.  [default: 2024-10-01]",
)
@click.option(
    "--anomaly-spread",
    type=click.FloatRange(min=1.0),
    help="Widen every anomaly range this many times around its centre.  [default: 1.0]",
)
@pass_ctx
@handle_errors
def demo_data_command(
    ctx: Context,
    out_dir: Path,
    sensors_per_site: int | None,
    days: int | None,
    seed: int | None,
    clean_days: int | None,
    start: Any,
    anomaly_spread: float | None,
) -> None:
    """Write realistic, labelled demo exports of 3 customers into OUT_DIR.

    5 sites (2 Norwegian sea-cage sites, 1 Chilean RAS, 2 Vietnamese pond farms) with
    N sensors each: 5 x N sensors, one row per sensor-minute (minus gaps). Writes
    sources.toml ([sources.NAME] mappings), seacage.csv, ras.parquet, pond.csv and
    labels.csv (sensor_id,start,end,type in UTC). Defaults: [demo] in the config.

    \b
    Example:
      oxy demo-data demo_data
      oxy demo-data big --sensors-per-site 20 --days 90   # 100 sensors, ~13 M rows
      oxy demo-data wide --anomaly-spread 2   # anomaly ranges twice as wide (benchmark)
    """
    from datetime import datetime

    from engine.demo import generate_demo

    given = {
        "sensors_per_site": sensors_per_site,
        "days": days,
        "seed": seed,
        "clean_days": clean_days,
        "start": start,
        "anomaly_spread": anomaly_spread,
    }
    options = {k: ctx.config["demo"][k] if v is None else v for k, v in given.items()}
    if isinstance(options["start"], str):
        options["start"] = datetime.fromisoformat(options["start"])
    summary = generate_demo(out_dir, **options)
    ctx.result(
        summary,
        lambda: click.echo(
            f"demo data: {summary['sensors']} sensors, {summary['rows']:,} rows, "
            f"{summary['labels']} labels -> {summary['out_dir']}/ ({', '.join(summary['files'])})"
        ),
    )


# --- ingest commands ----------------------------------------------------------------


@oxy.command("ingest")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--source",
    metavar="NAME",
    help="[sources.NAME] to apply (default: each file's name without extension).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Parse every file with its mapping and print what would land; write nothing.",
)
@click.option(
    "--accept-bad",
    is_flag=True,
    help="Commit a file even when more than ingest.max_bad_fraction of it would be quarantined.",
)
@pass_ctx
@handle_errors
def ingest_command(
    ctx: Context, files: tuple[Path, ...], source: str | None, dry_run: bool, accept_bad: bool
) -> None:
    """Ingest customer exports (CSV or Parquet) into the warehouse, one transaction per file.

    Prints, per file, read = accepted + duplicate + quarantined (also stored in the
    `ingest_log` table; rejected rows in `quarantine` with reason and line). A folder
    stands for its exports whose name is a declared source (or every export, with --source).
    A file of which more than ingest.max_bad_fraction would be quarantined commits nothing.

    \b
    Example:
      oxy --config demo_data/sources.toml ingest demo_data/seacage.csv
      oxy --config sources.toml ingest --dry-run export_march.csv --source fjordras
      oxy --config sources.toml ingest export_march.csv --source fjordras
    """
    from engine.ingest import ingest_files

    def show(result: Any) -> None:
        ctx.echo(result.summary())
        if result.preview is not None:
            for line in _preview_lines(result):
                ctx.echo(line)

    warehouse = ctx.warehouse if dry_run else ctx.writable_warehouse  # a dry run writes nothing
    with ctx.executor() as executor:
        results = ingest_files(
            warehouse,
            files,
            source=source,
            progress=ctx.progress,
            on_result=show,
            dry_run=dry_run,
            accept_bad=accept_bad,
            executor=executor,
        )

    def human() -> None:
        read = sum(r.rows_read for r in results)
        click.echo(
            f"this run: {len(results)} file(s), read {read:,} = "
            f"{sum(r.accepted for r in results):,} accepted + "
            f"{sum(r.duplicates for r in results):,} duplicate + "
            f"{sum(r.quarantined for r in results):,} quarantined; "
            f"{sum(r.new_sensors for r in results)} new sensor(s)"
        )
        if totals:
            click.echo(ctx.totals())

    totals = not dry_run or ctx.warehouse.exists()  # a dry run may have no warehouse yet
    ctx.result([r.to_dict() for r in results], human if len(results) > 1 else None)
    if len(results) == 1 and totals:
        ctx.echo(ctx.totals())


def _preview_lines(result: Any) -> list[str]:
    """The human rendering of a dry run's findings."""
    preview = result.preview
    lines = []
    if result.reasons:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in result.reasons.items())
        lines.append(f"  quarantined by reason: {reasons}")
    if result.unit_factor not in (None, 1.0):
        lines.append(f"  values in {result.source_unit} stored x {result.unit_factor:g}")
    new = preview.new_sensors
    lines.append(
        f"  sensors: {len(new)} new, {preview.known_sensors} already known" + (":" if new else "")
    )
    for sensor in new[:20]:
        lines.append(
            f"    {sensor['sensor_id']}  (levels {sensor['levels']}, bucket {sensor['bucket']})"
        )
    if len(new) > 20:
        lines.append(f"    ... and {len(new) - 20} more")
    if preview.first_rows:
        lines.append("  first rows as they would land:")
        for row in preview.first_rows:
            extra = "".join(
                f"  {key} {row[key]:g}"
                for key in ("temperature_c", "salinity")
                if row[key] is not None
            )
            lines.append(
                f"    {row['sensor_id']}  {row['ts']:%Y-%m-%d %H:%M:%S} UTC  "
                f"{row['value']:g} {row['unit']}{extra}"
            )
    if preview.refusal:
        lines.append(
            "  would commit nothing: " + preview.refusal.split(": nothing committed: ", 1)[-1]
        )
    return lines


@oxy.command("forget")
@click.argument("ingest_id", required=False)
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Forget every ingest of this file instead (as ingested: its absolute path).",
)
@pass_ctx
@handle_errors
def forget_command(ctx: Context, ingest_id: str | None, path: Path | None) -> None:
    """Remove one ingest: its readings, quarantine rows and ingest_log entry, in one transaction.

    The next `oxy score` rescores the affected sensors (scores of the removed readings go);
    a sensor left without readings and never scored is unregistered. INGEST_IDs are listed by
    `oxy status`.

    \b
    Example:
      oxy forget 20241101T020000-1a2b3c4d
      oxy forget --file exports/march.csv && oxy ingest exports/march.csv --source fjordras
    """
    from engine.ingest import forget

    result = forget(ctx.warehouse, ingest_id=ingest_id, path=path)
    ctx.result(result.to_dict(), lambda: [click.echo(line) for line in result.summary()])


@oxy.command("sources")
@pass_ctx
@handle_errors
def sources_command(ctx: Context) -> None:
    """List the configured source mappings with the files, readings and sensors each delivered.

    \b
    Example:
      oxy --config sources.toml sources
    """
    from engine.ingest import source_summaries

    summaries = source_summaries(ctx.warehouse)

    def human() -> None:
        if not summaries:
            click.echo("no sources configured (declare [sources.NAME] in --config FILE)")
            return
        click.echo(
            f"{'source':16} {'customer':14} {'unit':7} {'files':>6} {'readings':>12} "
            f"{'quarantined':>11} {'sensors':>7}  last ingest"
        )
        for s in summaries:
            last = f"{s['last_ingest']:%Y-%m-%d %H:%M}" if s["last_ingest"] else "-"
            note = "" if s["configured"] else "  (not in this config)"
            click.echo(
                f"{s['source']:16} {s['customer'] or '-':14} {s['unit'] or '-':7} "
                f"{s['files']:>6,} {s['readings']:>12,} {s['quarantined']:>11,} "
                f"{s['sensors']:>7,}  {last}{note}"
            )

    ctx.result(summaries, human)


# --- query commands (sql, status) ---------------------------------------------------


@oxy.command("sql")
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="How to deliver the rows (csv/json print to stdout without --output).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the result to this file (atomically; must be outside the warehouse).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    help="At most N rows (the printed table defaults to query.table_rows).",
)
@click.option(
    "--allow-incomplete",
    is_flag=True,
    help="Answer although a file of a table the query reads is missing or damaged "
    "(left out, with a warning); refused by default (see `oxy check`).",
)
@pass_ctx
@handle_errors
def sql_command(
    ctx: Context,
    query: str,
    fmt: str,
    output: Path | None,
    limit: int | None,
    allow_incomplete: bool,
) -> None:
    """Run one read-only SQL query over the warehouse's tables and views.

    The query runs in a sandbox: it sees `readings`, `sensors`, the marts and the other
    catalog tables, and cannot change the warehouse nor read or write any other file.
    QUERY `-` reads the query from stdin.

    \b
    Example:
      oxy sql "select customer, count(*) as sensors from sensors group by all"
      oxy sql "select * from readings where sensor_id = 'ras1/tank-02/o2'" \\
          --format parquet --output tank02.parquet
      oxy sql - --format csv < weekly_report.sql
    """
    from engine.query import render_table, run_sql, table_payload

    if query == "-":
        query = sys.stdin.read()
    stream = _binary_stdout() if fmt in ("csv", "json") else None
    result = run_sql(
        ctx.warehouse,
        query,
        fmt=fmt,
        output=output,
        limit=limit,
        stream=stream,
        allow_incomplete=allow_incomplete,
    )
    if result.output is not None:
        ctx.result(
            {"rows": result.rows, "output": str(result.output), "format": fmt},
            lambda: click.echo(f"wrote {result.rows:,} rows to {result.output}"),
        )
    elif fmt in ("csv", "json"):
        pass  # streamed to stdout
    else:
        width = int(ctx.config["query"]["column_width"])
        ctx.result(
            table_payload(result), lambda: click.echo(render_table(result, column_width=width))
        )


@oxy.command("status")
@click.option(
    "--ingests",
    "last_ingests",
    type=click.IntRange(min=0),
    help="How many of the latest ingests to list (default query.status_ingests).",
)
@pass_ctx
@handle_errors
def status_command(ctx: Context, last_ingests: int | None) -> None:
    """Summarise the warehouse: customers, sensors, rows, time span, quarantine, ingests, marts.

    \b
    Example:
      oxy status
      oxy --json status --ingests 3
    """
    from engine.query import render_status, warehouse_status

    status = warehouse_status(ctx.warehouse, last_ingests=last_ingests)
    width = int(ctx.config["query"]["column_width"])
    ctx.result(status, lambda: click.echo(render_status(status, column_width=width)))


@oxy.command("check")
@click.option(
    "--quick", is_flag=True, help="Sizes only (what every writer checks), no footers or models."
)
@pass_ctx
@handle_errors
def check_command(ctx: Context, quick: bool) -> None:
    """Check that every file is as the catalog recorded it and that the registry verifies.

    Every lake and mart file listed exists with the size and row count it was written with,
    marts agree with their bookkeeping, the production pointer and every model run verify
    (models are loaded in a child process). Prints each problem with the command that
    repairs it; exits 2 when there is one.

    \b
    Example:
      oxy check
      oxy --json check || notify-operator
    """
    from engine.check import check_warehouse, render_check

    report = check_warehouse(ctx.warehouse, deep=not quick)
    ctx.result(report.to_dict(), lambda: click.echo(render_check(report)))
    if not report.ok:
        sys.exit(2)


# --- anomaly commands (score, evaluate) ---------------------------------------------


@oxy.command()
@click.option("--full", is_flag=True, help="Forget what was scored and recompute everything.")
@pass_ctx
@handle_errors
def score(ctx: Context, full: bool) -> None:
    """Score readings for anomalies into the anomaly_scores and anomaly_events marts.

    Incremental by default: only readings of lake files not scored yet (and the minutes
    their windows reach) are rescored.

    \b
    Example:
      oxy score            # new readings only
      oxy score --full     # everything again
    """
    from engine.anomaly import score as score_readings_in_warehouse

    warehouse = ctx.writable_warehouse
    with ctx.executor() as executor:
        summary = score_readings_in_warehouse(
            warehouse, full=full, progress=ctx.progress, executor=executor
        )

    def human() -> None:
        what = "everything again" if summary.full else "new readings only"
        click.echo(
            f"this run ({what}): scored {summary.rows_scored:,} readings of "
            f"{summary.sensors_rescored} sensor(s) in {summary.buckets_scored} bucket(s) "
            f"in {summary.seconds:.1f} s"
        )
        click.echo(
            ctx.totals(
                f"{summary.anomalies:,} anomalous readings in {summary.events:,} anomaly events"
            )
        )

    ctx.result(summary.as_dict(), human)


@oxy.command()
@click.option(
    "--labels",
    "labels",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV of labelled events: sensor_id,start,end,type (UTC).",
)
@click.option("--seed-rules", is_flag=True, help="Also evaluate the seed's rules, unchanged.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the evaluation as JSON to this file.",
)
@pass_ctx
@handle_errors
def evaluate(ctx: Context, labels: Path, seed_rules: bool, output: Path | None) -> None:
    """Evaluate anomaly_scores against labelled events: recall per type, precision, F1.

    \b
    Example:
      oxy evaluate --labels demo_data/labels.csv --seed-rules --output eval.json
    """
    from engine.evaluate import evaluate as evaluate_labels
    from engine.evaluate import render

    result = evaluate_labels(ctx.warehouse, labels, seed_rules=seed_rules, output=output)
    ctx.result(result, lambda: ctx.echo(render(result)))


# --- forecast commands (train, forecast) -------------------------------------------


@oxy.command()
@pass_ctx
@handle_errors
def train(ctx: Context) -> None:
    """Train the global forecasting model, backtest it and record the run.

    Prints MAE/RMSE/MASE per split and, for the final test_days, the model beside both
    seasonal naives per horizon bucket, with the interval coverage.

    \b
    Example:
      oxy train
    """
    from engine.forecast import render_train
    from engine.forecast import train as train_model

    warehouse = ctx.writable_warehouse
    with ctx.executor() as executor:
        result = train_model(warehouse, echo=ctx.echo, progress=ctx.progress, executor=executor)

    def human() -> None:
        click.echo(render_train(result))
        click.echo(ctx.totals())

    ctx.result(result.as_dict(), human)


@oxy.command("forecast")
@click.option(
    "--sensor",
    "sensors",
    multiple=True,
    help="Forecast only this sensor (repeatable; default: every sensor).",
)
@click.option("--horizon", default=None, help="How far ahead, e.g. 7d, 12h (default: config).")
@pass_ctx
@handle_errors
def forecast_command(ctx: Context, sensors: tuple[str, ...], horizon: str | None) -> None:
    """Forecast each sensor from its last reading into the forecasts mart.

    Sensors with too little history or a recent sensor fault get a status (forecast_status
    mart) instead of a forecast; where the run's backtest found a seasonal naive better, it
    serves that horizon range (status fallback, with the reason).

    \b
    Example:
      oxy forecast
      oxy forecast --sensor 'fjordras|cage3|do' --horizon 2d
    """
    from engine.forecast import forecast as forecast_sensors

    warehouse = ctx.writable_warehouse
    with ctx.executor() as executor:
        summary = forecast_sensors(
            warehouse,
            sensor_ids=list(sensors) or None,
            horizon=horizon,
            echo=ctx.echo,
            progress=ctx.progress,
            executor=executor,
        )
    served = ("ok", "fallback")
    other = ", ".join(f"{n} {k}" for k, n in sorted(summary.statuses.items()) if k not in served)
    fallback = summary.statuses.get("fallback", 0)

    def human() -> None:
        click.echo(
            f"this run: run {summary.run_id}: {summary.rows:,} forecast rows for "
            f"{summary.forecast_sensors} of {summary.sensors} sensor(s)"
            + (f" ({fallback} by a seasonal naive where it beat the model)" if fallback else "")
            + (f"; no forecast: {other} (see forecast_status)" if other else "")
            + f" in {summary.seconds:.1f} s"
        )
        click.echo(ctx.totals())

    ctx.result(summary.as_dict(), human)


# --- operations commands (promote, rollback, infer, monitor, report) ---------------


@oxy.command("runs")
@pass_ctx
@handle_errors
def runs_command(ctx: Context) -> None:
    """List recorded training runs, newest first; `*` marks production.

    \b
    Example:
      oxy runs
    """
    from engine.registry import list_runs

    runs = list_runs(ctx.warehouse)

    def human() -> None:
        if not runs:
            click.echo("no runs recorded yet (run `oxy train`)")
        for r in runs:
            mark = "*" if r["is_production"] else " "
            rmse = "-" if r["test_rmse"] is None else f"{r['test_rmse']:.4f}"
            mase = "-" if r["test_mase"] is None else f"{r['test_mase']:.3f}"
            click.echo(
                f"{mark} {r['run_id']}  {r['created_at']:%Y-%m-%d %H:%M}  "
                f"test RMSE {rmse}  MASE {mase}  {r['reason']}"
            )

    ctx.result(runs, human)


@oxy.command("promote")
@click.argument("run_id")
@pass_ctx
@handle_errors
def promote_command(ctx: Context, run_id: str) -> None:
    """Make RUN_ID the production model, whatever its metrics (see `oxy runs`).

    \b
    Example:
      oxy promote 20240309T0102-ab12cd
    """
    from engine.registry import promote

    previous = promote(ctx.writable_warehouse, run_id)
    ctx.result(
        {"production": run_id, "previous": previous},
        lambda: click.echo(f"production: {run_id} (was {previous or 'none'})"),
    )


@oxy.command("rollback")
@pass_ctx
@handle_errors
def rollback_command(ctx: Context) -> None:
    """Return production to the run that was production before the current one.

    \b
    Example:
      oxy rollback
    """
    from engine.registry import rollback

    current, target = rollback(ctx.writable_warehouse)
    ctx.result(
        {"production": target, "previous": current},
        lambda: click.echo(f"production: {target} (rolled back from {current})"),
    )


@oxy.command("monitor")
@click.option("--all", "show_all", is_flag=True, help="List every check, not only warn/alert.")
@pass_ctx
@handle_errors
def monitor_command(ctx: Context, show_all: bool) -> None:
    """Check recent data against the production baseline; exit 2 on any alert.

    Checks stale sensors, anomaly rate and severity, forecast error on arrived minutes and
    input drift (PSI); results are appended to the `monitoring` table and mart.

    \b
    Example:
      oxy monitor || echo "oxy raised an alert"
    """
    from engine.monitor import run_monitor

    result = run_monitor(ctx.writable_warehouse)

    def human() -> None:
        counts = ", ".join(f"{n} {s}" for s, n in result.counts().items() if n)
        click.echo(f"monitor {result.time:%Y-%m-%d %H:%M} UTC: {result.status} ({counts})")
        for c in result.checks:
            if show_all or c.status in ("warn", "alert"):
                click.echo(f"  {c.status.upper():7} {c.scope:24} {c.check:16} {c.reason}")
        click.echo(ctx.totals())

    ctx.result(result.to_dict(), human)
    if result.status == "alert":
        sys.exit(2)


@oxy.command("infer")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--source", required=True, help="[sources.NAME] mapping of the export.")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Result file: .parquet or .csv (written atomically).",
)
@pass_ctx
@handle_errors
def infer_command(ctx: Context, file: Path, source: str, output: Path) -> None:
    """Score a new export for anomalies and add 1-step-ahead predictions (warehouse untouched).

    \b
    Example:
      oxy --config sources.toml infer export.csv --source fjordras --output scored.parquet
    """
    from engine.infer import infer_file

    result = infer_file(ctx.warehouse, file, source, output)

    def human() -> None:
        click.echo(
            f"{result.output}: {result.rows_written:,} rows, {result.anomalies:,} anomalous, "
            f"{result.predictions:,} predicted (run {result.production_run or 'none'}); "
            f"{result.known_sensors} known + {result.new_sensors} new sensors"
        )
        click.echo(
            f"  read {result.rows_read:,} = {result.rows_written:,} scored + "
            f"{result.duplicates:,} duplicate + {result.quarantined:,} quarantined"
            + (f" (see {result.quarantine_file})" if result.quarantine_file else "")
        )
        if result.prediction_note:
            click.echo(f"  note: {result.prediction_note}")

    ctx.result(result.to_dict(), human)


class IsoTime(click.ParamType):
    """``2024-03-01``, ``2024-03-01T06:00`` or with an offset (``2024-03-01T06:00+01:00``)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from datetime import datetime

        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(str(value).replace(" ", "T", 1))
        except ValueError:
            self.fail(f"{value!r} is not a time like 2024-03-01 or 2024-03-01T06:00", param, ctx)


@oxy.command("report")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for index.html, sensor pages and img/ (default: <warehouse>/report).",
)
@click.option(
    "--sensor",
    "sensors",
    multiple=True,
    metavar="ID",
    help="Give this sensor a page (repeatable; default: the worst report.max_sensors).",
)
@click.option(
    "--from",
    "start",
    type=IsoTime(),
    help="Window start (default: --to minus report.history). Site-local unless --utc.",
)
@click.option(
    "--to",
    "end",
    type=IsoTime(),
    help="Window end (default: the fleet's latest reading). Site-local unless --utc.",
)
@click.option("--utc", is_flag=True, help="Show and read times in UTC instead of site local.")
@pass_ctx
@handle_errors
def report_command(
    ctx: Context,
    output: Path | None,
    sensors: tuple[str, ...],
    start: Any,
    end: Any,
    utc: bool,
) -> None:
    """Write the static HTML report (fleet overview + per-sensor pages with PNG plots).

    Each sensor page lists every anomaly event in the window, each linked to its own plot;
    time axes are in the site's local time (named on the axis) unless --utc.

    \b
    Example:
      oxy report --output report && xdg-open report/index.html
      oxy report --sensor 'fjordras|cage3|do' --from 2024-10-20 --to 2024-10-28
    """
    from engine.report import build_report

    result = build_report(
        ctx.warehouse,
        output,
        sensors=list(sensors) or None,
        start=start,
        end=end,
        utc=utc,
        progress=ctx.progress,
    )

    def human() -> None:
        click.echo(
            f"this run: {result.index} ({len(result.sensor_pages)} sensor pages, "
            f"{result.events} events, {len(result.images)} plots; window "
            f"{result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC)"
        )
        for note in result.notes:
            click.echo(f"  note: {note}")
        click.echo(ctx.totals())

    ctx.result(result.to_dict(), human)


def main() -> None:
    oxy(prog_name="oxy")


if __name__ == "__main__":
    main()
