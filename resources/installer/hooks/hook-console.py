"""PyInstaller hook for our `console` package: its style sheets and other data."""

from PyInstaller.utils.hooks import collect_data_files

datas = collect_data_files("console", excludes=["**/__pycache__"])
