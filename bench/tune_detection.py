"""Leave-one-family-out search of the detectors' thresholds, fast: every source is scored once
up to the detectors' inputs, then each threshold combination only re-runs the scores.

The warehouses come from ``bench/detection_suite.py --keep DIR`` (each source ingested by oxy's
own ingest). For every held-out family the combination with the best mean F1 over the *other*
families is chosen, and the held-out family's figure at that combination is printed beside the
one the current defaults give. The last line is the combination best over every family: the
candidate for ``engine/defaults.toml``, to be confirmed by ``detection_suite.py --tune`` (which
rescores everything end to end and writes bench/RESULTS.md).

Usage::

    .venv/bin/python bench/detection_suite.py --keep /tmp/suite --no-write --pyhydroqc off
    .venv/bin/python bench/tune_detection.py /tmp/suite [--grid grid.toml]

The grid is a TOML of ``"section.key" = [values]`` under ``[anomaly]`` (and ``[structure]``
for settings that change the inputs); default :data:`GRID`; bench/detection_grid.toml holds the
last one searched.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from engine import anomaly, detectors  # noqa: E402
from engine.config import Config  # noqa: E402
from engine.evaluate import read_labels  # noqa: E402
from engine.warehouse import Warehouse  # noqa: E402

# settings that change the detectors' inputs (each combination re-prepares every source)
STRUCTURE: dict[str, list[Any]] = {}
GRID: dict[str, list[Any]] = {
    "spike.z": [5.0, 6.0, 8.0],
    "noise.ratio": [3.0, 4.0],
    "point.z": [10.0, 14.0],
    "collective.z": [5.0, 6.0, 8.0],
    "contextual.z": [5.0, 6.0, 8.0],
    "drift.z": [4.0, 6.0],
    "stuck.ratio": [3.0, 5.0],
}
LEAD, LAG = timedelta(minutes=2), timedelta(minutes=5)


@dataclass
class Prepared:
    name: str
    family: str
    inputs: pl.DataFrame
    membership: pl.DataFrame  # row, event_id, second_half (readings inside a labelled window)
    events: pl.DataFrame  # event_id, type
    inside: pl.Series  # per row: inside any labelled window (with the tolerance)


def family(name: str) -> str:
    if name == "lro":
        return "lro"
    if name.startswith("demo-wide"):
        return "demo-wide"
    return name.split("/")[0] + "/" + name.split("/")[1].split("-")[0] if "/" in name else name


def prepare(folder: Path, config: Config) -> Prepared:
    """The detectors' inputs of every reading of one kept source, and its labels' windows."""
    wh = Warehouse(folder / "wh", config)
    a, w = anomaly.settings(config)
    with wh.reader() as con:
        sites = anomaly.site_sensors(con, a)
        ids = anomaly.sensor_dtype(sites["sensor_id"])
        sites = sites.with_columns(pl.col("sensor_id").cast(ids))
        readings = anomaly.read_readings(
            wh,
            con,
            sorted(set(sites["bucket"].to_list())),
            dict.fromkeys(sites["sensor_id"].cast(pl.String).to_list(), anomaly.FULL_FROM),
            ids,
        )
        frame = detectors.prepare(anomaly.with_sensor_info(con, readings, sites))
    cadence = detectors.cadence_by_hour(detectors.raw_hourly_steps(frame))
    frame = frame.join(cadence, on=["sensor_id", "hour"], how="left").sort("sensor_id", "ts")
    features = detectors.minute_features(frame, w)
    hourly = detectors.hourly_statistics(features).join(
        sites.select("sensor_id", "unit", "site"), on="sensor_id"
    )
    hourly = hourly.sort("sensor_id", "hour")
    moves = detectors.site_movement(
        detectors.levels(hourly, w), int(a["drift"]["site_min_sensors"])
    )
    base = detectors.baselines(hourly, moves, a, w)
    inputs = detectors.score_inputs(features, base, w).with_row_index("row")
    labels = read_labels(folder / "data" / "labels.csv").with_columns(
        pl.col("sensor_id").cast(ids, strict=False)
    )
    windows = labels.with_columns(lo=pl.col("start_ts") - LEAD, hi=pl.col("end_ts") + LAG)
    mid = pl.col("start_ts") + (pl.col("end_ts") - pl.col("start_ts")) / 2
    membership = (
        inputs.select("row", "sensor_id", "ts")
        .join(windows, on="sensor_id")
        .filter(pl.col("ts").is_between(pl.col("lo"), pl.col("hi")))
        .select("row", "event_id", "type", second_half=pl.col("ts") >= mid)
    )
    inside = pl.Series(
        inputs["row"].is_in(membership["row"].unique().implode()).to_list(), dtype=pl.Boolean
    )
    return Prepared(
        folder.name.replace("_", "/", 1),
        "",
        inputs,
        membership,
        labels.select("event_id", "type"),
        inside,
    )


def flags_of(p: Prepared, a: dict[str, Any]) -> pl.Series:
    """``is_anomaly`` of every reading under the settings ``a``."""
    return detectors.detector_scores(p.inputs, a)["is_anomaly"]


def detector_flags(p: Prepared, a: dict[str, Any], grid: dict[str, list[Any]]) -> dict:
    """Per detector and per value of its grid key, its own flags (``score >= threshold``); the
    detectors outside the grid together under ``None``. A grid point's flags are the OR of
    one column per detector (a reading is flagged when any detector's score reaches the
    severity threshold), so a point costs a few boolean ORs, not a rescoring."""
    frame = p.inputs.with_columns(saturation=detectors.saturation(p.inputs, a))
    threshold = float(a["severity_threshold"])
    tuned = {key.split(".")[0] for key in grid}
    out: dict[Any, pl.Series] = {}
    for d in detectors.DETECTORS:
        keys = [k for k in grid if k.split(".")[0] == d.name]
        if not keys:
            continue
        for values in itertools.product(*(grid[k] for k in keys)):
            section = {
                **a[d.name],
                **{k.split(".")[1]: v for k, v in zip(keys, values, strict=True)},
            }
            score = frame.select(d.score(section).fill_nan(None).fill_null(0.0))
            out[(d.name, values)] = score.to_series() >= threshold
    fixed = [
        frame.select(d.score(a.get(d.name, {})).fill_nan(None).fill_null(0.0)).to_series()
        >= threshold
        for d in detectors.DETECTORS
        if d.name not in tuned
    ]
    out[None] = pl.Series([False] * frame.height) if not fixed else fixed[0]
    for extra in fixed[1:]:
        out[None] = out[None] | extra
    return out


def point_flags(flags: dict, grid: dict[str, list[Any]], point: dict[str, Any]) -> pl.Series:
    result = flags[None]
    for d in detectors.DETECTORS:
        keys = [k for k in grid if k.split(".")[0] == d.name]
        if keys:
            result = result | flags[(d.name, tuple(point[k] for k in keys))]
    return result


def evaluate(p: Prepared, flags: pl.Series) -> dict[str, float]:
    flagged = int(flags.sum())
    inside = int((flags & p.inside).sum())
    member = p.membership.with_columns(flag=flags.gather(p.membership["row"]))
    per = member.group_by("event_id", "type").agg(
        any=pl.col("flag").any(), second=pl.col("flag").filter(pl.col("second_half")).mean()
    )
    per = p.events.join(per.drop("type"), on="event_id", how="left").with_columns(
        found=pl.when(pl.col("type") == "drift")
        .then(pl.col("second").fill_null(0.0) >= 0.25)
        .otherwise(pl.col("any").fill_null(False))
    )
    recall = float(per["found"].mean() or 0.0)
    precision = inside / flagged if flagged else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "f1": f1,
        "recall": recall,
        "precision": precision,
        "flagged": flagged / p.inputs.height,
    }


def with_point(a: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in a.items()}
    for key, value in point.items():
        section, name = key.split(".")
        out[section][name] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kept", type=Path, help="the --keep folder of detection_suite.py")
    parser.add_argument("--grid", type=Path, help='TOML: [anomaly] "section.key" = [values]')
    parser.add_argument("--no-write", action="store_true", help="print only (no RESULTS.md)")
    args = parser.parse_args()
    base = Config.load()
    grid, structure = GRID, STRUCTURE
    if args.grid:
        spec = tomllib.loads(args.grid.read_text())
        grid = spec["anomaly"]
        structure = spec.get("structure", {})
    started = time.perf_counter()
    folders = sorted(p for p in args.kept.iterdir() if (p / "wh").is_dir())
    defaults = {}
    for folder in folders:
        p = prepare(folder, base)
        defaults[p.name] = evaluate(p, flags_of(p, base["anomaly"]))
    points: list[dict[str, Any]] = []
    results: list[dict[str, dict[str, float]]] = []
    shapes = itertools.product(*structure.values())
    outer = [dict(zip(structure, values, strict=True)) for values in shapes]
    prepared: list[Prepared] = []
    for shape in outer:
        config = base.with_overrides({"anomaly": with_point(base["anomaly"], shape)})
        prepared = []
        for folder in folders:
            p = prepare(folder, config)
            p.family = family(p.name)
            prepared.append(p)
        print(f"prepared {len(prepared)} sources for {shape or 'the defaults'}", flush=True)
        a = config["anomaly"]
        inner = [
            dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())
        ]
        columns = {p.name: detector_flags(p, a, grid) for p in prepared}
        for i, point in enumerate(inner):
            results.append(
                {p.name: evaluate(p, point_flags(columns[p.name], grid, point)) for p in prepared}
            )
            points.append({**shape, **point})
            if i % 250 == 0:
                print(f"  {i + 1}/{len(inner)} points ({time.perf_counter() - started:.0f} s)")
    families = sorted({p.family for p in prepared})

    def family_f1(r: dict[str, dict[str, float]], fam: str) -> float:
        members = [p.name for p in prepared if p.family == fam]
        return sum(r[m]["f1"] for m in members) / len(members)

    print("\nheld-out family: F1 at the point chosen on the others (defaults) — the point")
    rows = [
        "| held-out family | F1 at the point chosen on the other families | F1 at the defaults "
        "(chosen on every family) | the point chosen without it |",
        "|---|---|---|---|",
    ]
    for fam in families:
        others = [f for f in families if f != fam]
        best = max(range(len(points)), key=lambda i: sum(family_f1(results[i], f) for f in others))
        held, tuned = family_f1(results[best], fam), family_f1(defaults, fam)
        print(f"{fam:<18} {held:.3f} ({tuned:.3f}) {points[best]}")
        shown = ", ".join(f"{k} {v}" for k, v in points[best].items())
        rows.append(f"| {fam} | **{held:.3f}** | {tuned:.3f} | {shown} |")
    best = max(range(len(points)), key=lambda i: sum(family_f1(results[i], f) for f in families))
    print(f"\nbest over every family: {points[best]}")
    for p in prepared:
        r = results[best][p.name]
        print(
            f"  {p.name:<22} F1 {r['f1']:.3f} R {r['recall']:.3f} P {r['precision']:.3f} "
            f"flagged {100 * r['flagged']:.2f} %"
        )
    print(f"({len(points)} points, {time.perf_counter() - started:.0f} s)")
    if not args.no_write:
        from bench.results import write_section

        grid_text = "; ".join(f"`{k}` {v}" for k, v in {**structure, **grid}.items())
        body = (
            "Each family left out in turn: the thresholds are chosen on the other families (best "
            "mean F1 over them) and the left-out family is scored at that choice — the held-out "
            "figure. The suite's own table (section above) scores every source at the defaults, "
            "which are the point best over every family. F1 here is the mean over a family's "
            "sources, from this script's evaluation (the suite's rules, without counting "
            f"quarantined readings). Grid: {grid_text}.\n\n" + "\n".join(rows) + "\n\n"
            f"Best over every family: {', '.join(f'{k} {v}' for k, v in points[best].items())}."
        )
        write_section(
            "detection-loso", body, title="Detection: leave-one-family-out (held-out figures)"
        )


if __name__ == "__main__":
    main()
