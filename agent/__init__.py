"""The Deploy Console agent: connects, registers, downloads, installs, reports."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deploy-console")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0+unknown"
