"""oxy: anomaly scoring and week-ahead forecasting for dissolved-oxygen readings."""

import os

__version__ = "0.1.0"

# LightGBM's OpenMP threads busy-wait by default: on a box whose cores are shared, a fit on
# 31k pairs took 16 s with 2 spinning threads and 1.0 s with passive waiting. Set before the
# OpenMP runtime starts (any engine module imports this package before lightgbm); a user's
# own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class OxyError(Exception):
    """An error a user can cause and fix; the CLI prints its message as one line."""
