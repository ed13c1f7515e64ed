"""Frozen entry point of `deploy-agent` (PyInstaller runs this file, not a module)."""

import multiprocessing
import sys

from agent.cli import main

if __name__ == "__main__":
    # A frozen Windows program re-executes itself for each multiprocessing child;
    # without this call that child would start a second agent.
    multiprocessing.freeze_support()
    sys.exit(main())
