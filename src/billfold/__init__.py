"""billfold: billing for open platforms."""

__version__ = "0.1.0"
