"""The detection benchmark's peers, configured as a practitioner would, on the same readings.

Each peer takes one sensor's readings (``ts``, ``value``: everything the export held with a
time and a finite number, sentinels included -- a peer gets no help from oxy's ingest) and
returns one flag per reading. ``bench/detection_suite.py`` scores the flags with the same
``engine.evaluate.evaluate_flags`` as oxy and the seed's rules.

**IOOS QARTOD** (``ioos-qc``), thresholds chosen up front from the sensor's own spread:

* gross range: fail outside 0-25 mg/L (0-300 %sat); suspect outside 2-18 mg/L on river
  data, 1-20 mg/L (10-250 %sat) elsewhere;
* spike: suspect / fail at 3 / 6 x ``sigma``, the std of the sensor's reading-to-reading
  steps (over readings inside the fail span: one -9999 would make it meaningless);
* rate of change: 3 x ``sigma`` per median step (ioos-qc takes units per second);
* flat line: suspect after 3 h / fail after 6 h at 15-min cadence, 30 / 60 min at 1 min,
  linear in the cadence between (72 / 145 min at 5 min, 126 / 252 min at 10 min);
  tolerance 0.005;
* ``fail`` flags a reading any test fails; ``suspect+fail`` one any test flags 3 or 4.

**PyHydroQC** (0.0.4, the LRO authors' package): its rules (range check, persistence) then an
ARIMA model of the rule-corrected series with its dynamic residual threshold, events widened
by ``widen`` readings -- the pieces of its ``arima_detect`` workflow called one by one
(``arima_detect(rules=True)`` itself assigns ``range_check``'s tuple to the frame and fails).
On the LRO sites (real and semi-synthetic) the DO parameters its authors published for
those very sites (``pyhydroqc.parameters.site_params``: tuned on these files, so a
tuned-on figure for PyHydroQC); elsewhere range 1-20 mg/L (10-250 %sat), persistence = the
flat-line fail duration, window 30, alpha 1e-4, minimum threshold 0.15 mg/L (1.5 %sat), and
ARIMA order (1, 1, 1), the one its authors published for DO at two of their six sites
(``--pyhydroqc-auto-order``: its own ``pdq``, pmdarima's auto_arima, on the first 2,000
rule-corrected readings of a background's first seed, reused for its other seeds; 70 s to
10 min per series on this box).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

LRO_SITES = ("MainStreet", "Mendon", "TonyGrove")
# ARIMA order away from the LRO sites: the one PyHydroQC's authors published for DO at two of
# their six sites (MainStreet, Waterlab; the others 0,1,5 / 10,1,0 / 10,1,3 / 0,0,5)
GENERIC_ORDER = (1, 1, 1)


@dataclass(frozen=True)
class QartodConfig:
    fail_span: tuple[float, float]
    suspect_span: tuple[float, float]
    spike_suspect: float
    spike_fail: float
    rate_per_s: float
    flat_suspect_s: float
    flat_fail_s: float
    tolerance: float = 0.005


def flat_line_seconds(cadence_min: float) -> tuple[float, float]:
    """Flat-line suspect / fail durations (s) for a cadence: 30 / 60 min at 1 min, 3 / 6 h at
    15 min, linear between (and held beyond)."""
    c = min(max(cadence_min, 1.0), 15.0)
    suspect_min = 30.0 + (c - 1.0) * (180.0 - 30.0) / 14.0
    return suspect_min * 60.0, 2.0 * suspect_min * 60.0


def step_sigma(values: np.ndarray, fail_span: tuple[float, float]) -> float:
    """Std of reading-to-reading steps over the readings inside the fail span (>= 1e-3)."""
    inside = values[(values >= fail_span[0]) & (values <= fail_span[1])]
    steps = np.diff(inside)
    return max(float(np.std(steps)) if steps.size > 1 else 0.0, 1e-3)


def qartod_config(values: np.ndarray, cadence_s: float, unit: str, river: bool) -> QartodConfig:
    if unit == "%sat":
        fail, suspect = (0.0, 300.0), (10.0, 250.0)
    else:
        fail, suspect = (0.0, 25.0), ((2.0, 18.0) if river else (1.0, 20.0))
    sigma = step_sigma(values, fail)
    flat_suspect, flat_fail = flat_line_seconds(cadence_s / 60.0)
    return QartodConfig(
        fail_span=fail,
        suspect_span=suspect,
        spike_suspect=3.0 * sigma,
        spike_fail=6.0 * sigma,
        rate_per_s=3.0 * sigma / cadence_s,
        flat_suspect_s=flat_suspect,
        flat_fail_s=flat_fail,
    )


def qartod_flags(ts: np.ndarray, values: np.ndarray, config: QartodConfig) -> np.ndarray:
    """The largest QARTOD flag of the four tests per reading (1 pass, 3 suspect, 4 fail;
    ``missing``/``not evaluated`` count as pass)."""
    from ioos_qc import qartod

    tinp = np.asarray(ts).astype("datetime64[ns]")
    tests = [
        qartod.gross_range_test(
            values, fail_span=config.fail_span, suspect_span=config.suspect_span
        ),
        qartod.spike_test(
            values, suspect_threshold=config.spike_suspect, fail_threshold=config.spike_fail
        ),
        qartod.rate_of_change_test(values, tinp, config.rate_per_s),
        qartod.flat_line_test(
            values,
            tinp,
            suspect_threshold=config.flat_suspect_s,
            fail_threshold=config.flat_fail_s,
            tolerance=config.tolerance,
        ),
    ]
    flags = np.ones(values.size, dtype=np.int8)
    for result in tests:
        f = np.ma.filled(result, 1).astype(np.int8)
        f[(f == 2) | (f == 9)] = 1
        flags = np.maximum(flags, f)
    return flags


# --- PyHydroQC ---------------------------------------------------------------------------
def _quiet_import() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyhydroqc  # noqa: F401  (imports tensorflow: ~7 s once)
        from pyhydroqc import anomaly_utilities, modeling_utilities, rules_detect
        from pyhydroqc.parameters import site_params
    return anomaly_utilities, modeling_utilities, rules_detect, site_params


def pyhydroqc_available() -> str | None:
    """None when PyHydroQC imports, else why not (one line)."""
    try:
        _quiet_import()
    except Exception as exc:  # noqa: BLE001 - any failure to import is the answer
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def pyhydroqc_params(sensor_id: str, unit: str, cadence_s: float) -> Any:
    """PyHydroQC's published DO parameters for an LRO site, generic ones elsewhere (their
    ARIMA order ``pdq`` None: chosen by :func:`pyhydroqc_flags` on the rule-corrected series)."""
    *_, site_params = _quiet_import()
    from pyhydroqc.parameters import Parameters

    for site in LRO_SITES:
        if f"|{site}|" in f"|{sensor_id}|":
            return site_params[site]["do"]
    _, flat_fail = flat_line_seconds(cadence_s / 60.0)
    sat = unit == "%sat"
    return Parameters(
        max_range=250.0 if sat else 20.0,
        min_range=10.0 if sat else 1.0,
        persist=max(3, int(round(flat_fail / cadence_s))),
        window_sz=30,
        alpha=0.0001,
        threshold_min=1.5 if sat else 0.15,
        widen=1,
        pdq=None,
    )


def pyhydroqc_flags(
    sensor_id: str,
    ts: np.ndarray,
    values: np.ndarray,
    unit: str,
    cadence_s: float,
    orders: dict[str, list[int]] | None = None,
    auto_order: bool = False,
) -> dict[str, np.ndarray]:
    """``{"rules": flags, "rules+arima": flags}`` for one sensor (booleans per reading).

    Away from the LRO sites the ARIMA order is ``GENERIC_ORDER`` or, with ``auto_order``,
    PyHydroQC's own ``pdq`` (pmdarima's auto_arima) on the first 2,000 rule-corrected
    readings, cached in ``orders`` per background (the sensor id's second level: the seeds of
    one background share its dynamics). The search took 70 s to 10 min per one-minute series
    on this shared box, the fit itself 2-3 s."""
    import pandas as pd

    anomaly_utilities, modeling_utilities, rules_detect, _ = _quiet_import()
    frame = pd.DataFrame({"raw": values}, index=pd.DatetimeIndex(ts))
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = pyhydroqc_params(sensor_id, unit, cadence_s)
        frame, _ = rules_detect.range_check(frame, params.max_range, params.min_range)
        frame, _ = rules_detect.persistence(frame, params.persist)
        frame = rules_detect.interpolate(frame)
        rules = frame["anomaly"].to_numpy(dtype=bool)
        key = sensor_id.split("|")[1] if "|" in sensor_id else sensor_id
        if params.pdq is None and not auto_order:
            params.pdq = list(GENERIC_ORDER)
        if params.pdq is None and orders is not None and key in orders:
            params.pdq = orders[key]
        if params.pdq is None:
            params.pdq = list(modeling_utilities.pdq(frame["observed"].iloc[:2000]))
            if orders is not None:
                orders[key] = params.pdq
        p, d, q = params.pdq
        _, residuals, predictions = modeling_utilities.build_arima_model(
            frame["observed"], p, d, q, summary=False, suppress_warnings=False
        )  # its suppress_warnings=True ends with warnings.filterwarnings("default"): global
        threshold = anomaly_utilities.set_dynamic_threshold(
            residuals[0], params.window_sz, params.alpha, params.threshold_min
        )
        threshold.index = residuals.index
        detections = anomaly_utilities.detect_anomalies(
            frame["observed"], predictions, residuals, threshold, summary=False
        )
        both = pd.Series(rules | detections["anomaly"].to_numpy(dtype=bool), index=frame.index)
        events = np.asarray(anomaly_utilities.anomaly_events(both, params.widen))
        rule_events = np.asarray(
            anomaly_utilities.anomaly_events(pd.Series(rules, index=frame.index), params.widen)
        )
    return {"rules": rule_events > 0, "rules+arima": events > 0}
