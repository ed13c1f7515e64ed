"""PyInstaller hook for our `agent` package: any data files it ships."""

from PyInstaller.utils.hooks import collect_data_files

datas = collect_data_files("agent", excludes=["**/__pycache__"])
