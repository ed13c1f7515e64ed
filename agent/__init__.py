"""The Deploy Console agent: connects, registers, downloads, installs, reports."""

__version__ = "0.1.0"
