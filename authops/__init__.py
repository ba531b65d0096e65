"""authops: the platform for the authorized operation of public data."""

__version__ = "0.1.0"
