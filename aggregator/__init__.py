"""Regional news aggregator."""

__version__ = "0.1.0"
