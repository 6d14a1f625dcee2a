"""oxy: anomaly scoring and week-ahead forecasting for dissolved-oxygen readings."""

__version__ = "0.1.0"


class OxyError(Exception):
    """An error a user can cause and fix; the CLI prints its message as one line."""
