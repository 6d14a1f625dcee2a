"""Detection quality on labelled demo fleets: oxy beside the seed's rules, per demo seed.

For each seed: ``oxy demo-data`` (``--sensors-per-site N --days D --seed S``), ingest, a full
``oxy score`` and ``oxy evaluate --seed-rules`` in a fresh warehouse. The tuning seeds are
the ones the detector thresholds were chosen on; the reporting seed was never used for
tuning (README "Anomaly scoring"). ``--detail`` lists, for our flags, every missed event
and every cluster of flagged readings outside the labelled windows (by anomaly type), for the
tuning seeds only (a reporting seed's misses are not for tuning).

    .venv/bin/python bench/bench_quality.py                         # tune 1,3-9; report 2,10
    .venv/bin/python bench/bench_quality.py --tune "" --report 2    # the reporting seed only
    .venv/bin/python bench/bench_quality.py --tune 1 --report "" --detail
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BAR = {"f1": 0.95, "recall": 0.9, "drift": 0.8, "flagged_fraction": 0.02}


def run_seed(base: Path, seed: int, sensors_per_site: int, days: int) -> dict[str, Any]:
    """Generate, ingest, score and evaluate one demo seed in ``base``; the evaluation dict."""
    from engine.anomaly import score
    from engine.config import Config
    from engine.demo import generate_demo
    from engine.evaluate import evaluate
    from engine.ingest import ingest_files
    from engine.warehouse import Warehouse

    data = base / f"demo_{seed}"
    generate_demo(data, sensors_per_site=sensors_per_site, days=days, seed=seed)
    config = Config.load(data / "sources.toml")
    wh = Warehouse(base / f"wh_{seed}", config)
    exports = sorted(p for p in data.iterdir() if p.suffix in (".csv", ".parquet"))
    ingest_files(wh, [p for p in exports if p.name != "labels.csv"])
    started = time.perf_counter()
    score(wh, full=True)
    result = evaluate(wh, data / "labels.csv", seed_rules=True)
    result["score_seconds"] = time.perf_counter() - started
    result["warehouse"] = wh
    return result


def detail(result: dict[str, Any], labels: Path) -> str:
    """Missed events, and flagged readings outside labelled windows grouped into clusters."""
    import polars as pl

    from engine.evaluate import read_labels

    wh = result["warehouse"]
    lines = []
    for m in result["ours"]["missed"]:
        lines.append(
            f"  missed {m['type']:<10} {m['sensor_id']:<44} {m['start_ts']} .. {m['end_ts']}"
        )
    lab = read_labels(labels)
    with wh.reader() as con:
        con.register("lab", lab.to_arrow())
        clusters = pl.from_arrow(
            con.sql(
                """
                with f as (
                    select s.sensor_id, s.ts, s.anomaly_type, s.severity
                    from anomaly_scores s
                    where s.is_anomaly and not exists (
                        select 1 from lab l where l.sensor_id = s.sensor_id
                        and s.ts between l.start_ts - interval 2 minutes
                            and l.end_ts + interval 5 minutes)
                ),
                g as (
                    select *, sum(case when ts - prev > interval 30 minutes or prev is null
                        then 1 else 0 end) over (partition by sensor_id order by ts) as grp
                    from (select *, lag(ts) over (partition by sensor_id order by ts) as prev
                          from f)
                )
                select sensor_id, min(ts) as start, max(ts) as end, count(*) as n,
                    mode(anomaly_type) as type, max(severity) as sev
                from g group by sensor_id, grp order by n desc
                """
            ).to_arrow_table()
        )
        con.unregister("lab")
    by_type = clusters.group_by("type").agg(pl.len().alias("clusters"), pl.col("n").sum())
    lines.append(
        "  false-positive clusters by type: "
        + ", ".join(
            f"{r['type']} {r['clusters']} ({r['n']} min)"
            for r in by_type.sort("n", descending=True).to_dicts()
        )
    )
    for r in clusters.head(15).to_dicts():
        lines.append(
            f"  fp {r['type']:<10} {r['sensor_id']:<44} {r['start']} .. {r['end']} "
            f"{r['n']:>5} min sev {r['sev']:.2f}"
        )
    return "\n".join(lines)


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """One line per seed: ours / seed rules."""
    types = ("spike", "collective", "contextual", "stuck", "noise", "dropout", "drift")
    head = f"{'seed':<8}{'rules':<6}" + "".join(f"{t[:5]:>9}" for t in types)
    head += f"{'events':>8}{'recall':>8}{'prec':>7}{'F1':>7}{'flag%':>7}"
    lines = [head, "-" * len(head)]
    for name, result in rows:
        for who, key in (("oxy", "ours"), ("seed", "seed_rules")):
            m = result[key]
            cells = []
            for t in types:
                b = m["by_type"].get(t)
                cells.append(f"{b['found']}/{b['events']}" if b else "-")
            lines.append(
                f"{name if who == 'oxy' else '':<8}{who:<6}"
                + "".join(f"{c:>9}" for c in cells)
                + f"{m['events']:>8}{m['recall']:>8.3f}{m['precision']:>7.3f}{m['f1']:>7.3f}"
                + f"{100 * m['flagged_fraction']:>6.2f}%"
            )
    return "\n".join(lines)


def pooled(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Events and flagged readings of several seeds pooled into one evaluation."""
    import polars as pl

    from engine.evaluate import metrics

    types, found = [], []
    totals = {"readings": 0, "flagged": 0, "flagged_inside": 0}
    for r in results:
        m = r[key]
        for t, b in m["by_type"].items():
            types += [t] * b["events"]
            found += [True] * b["found"] + [False] * (b["events"] - b["found"])
        for k in totals:
            totals[k] += m[k]
    return metrics(pl.DataFrame({"type": types, "found": found}), totals)


def verdict(m: dict[str, Any]) -> str:
    worst = {t: b["recall"] for t, b in m["by_type"].items()}
    ok_types = all(r >= (BAR["drift"] if t == "drift" else BAR["recall"]) for t, r in worst.items())
    checks = [
        f"F1 {m['f1']:.3f} {'>=' if m['f1'] >= BAR['f1'] else '<'} 0.95",
        "type recalls " + ("met" if ok_types else "NOT met"),
        f"flagged {100 * m['flagged_fraction']:.2f}% "
        + ("<=" if m["flagged_fraction"] <= BAR["flagged_fraction"] else ">")
        + " 2%",
    ]
    return "; ".join(checks)


def seeds(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", default="1,3,4,5,6,7,8,9", help="tuning seeds (comma-separated)")
    parser.add_argument("--report", default="2,10", help="reporting seed(s), never tuned on")
    parser.add_argument("--sensors-per-site", type=int, default=5, help="tuning fleets")
    parser.add_argument(
        "--report-sensors-per-site", type=int, default=10, help="reporting fleet (larger)"
    )
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--detail", action="store_true", help="missed events and FP clusters")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="oxy-quality-"))
    print(f"demo fleets: {args.days} days per seed; severity threshold 0.5")
    try:
        for label, group, n in (
            ("tuning", seeds(args.tune), args.sensors_per_site),
            ("reporting", seeds(args.report), args.report_sensors_per_site),
        ):
            if not group:
                continue
            rows = []
            for seed in group:
                result = run_seed(base, seed, n, args.days)
                rows.append((f"{seed}", result))
                if args.detail and label == "tuning":  # never look at a reporting seed's detail
                    print(f"seed {seed} ({label}), scored in {result['score_seconds']:.0f} s")
                    print(detail(result, base / f"demo_{seed}" / "labels.csv"))
            if len(rows) > 1:
                rows.append(
                    (
                        "pooled",
                        {
                            "ours": pooled([r for _, r in rows], "ours"),
                            "seed_rules": pooled([r for _, r in rows], "seed_rules"),
                        },
                    )
                )
            print(
                f"\n{label} seed(s) {','.join(str(s) for s in group)}, {5 * n} sensors each "
                "(found/events per type)"
            )
            print(table(rows))
            final = rows[-1][1]
            print(f"  oxy vs the bar ({rows[-1][0]}): {verdict(final['ours'])}")
            print(f"  seed rules vs the bar:          {verdict(final['seed_rules'])}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
