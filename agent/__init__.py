"""The Deploy Console agent: connects, registers, downloads, installs, reports."""
