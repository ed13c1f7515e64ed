"""PyInstaller hook for our `agent` package: its data files, and on Windows the
pywin32 modules `agent.winservice` imports only inside `run_service`."""

import sys

from PyInstaller.utils.hooks import collect_data_files

datas = collect_data_files("agent", excludes=["**/__pycache__"])
hiddenimports = ["agent.winservice"]
if sys.platform == "win32":
    hiddenimports += [
        "servicemanager",
        "win32service",
        "win32serviceutil",
        "win32timezone",
    ]
