"""Frozen entry point of `deploy-console` (PyInstaller runs this file, not a module).

`deploy-console -m agent ...` runs the bundled agent instead of the window, so code
that starts an agent as `[sys.executable, "-m", "agent", ...]` (the demo fleet, the
self-test's default) works the same frozen as from a virtual environment.
"""

import contextlib
import multiprocessing
import sys


def _reattach_std_streams() -> None:
    """Give a windowed Windows build its stdout/stderr back when it has them.

    PyInstaller's windowed programs start with `sys.stdout` None. When the caller
    passed pipes (build_installer.py --self-test does), the handles exist and the
    self-test's step lines should reach them; after a double-click there are none.
    """
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            with contextlib.suppress(OSError):
                # Open for the life of the process, as the usual sys.stdout is.
                stream = open(  # noqa: SIM115
                    fd, "w", encoding="utf-8", errors="replace", closefd=False
                )
                setattr(sys, name, stream)


if __name__ == "__main__":
    _reattach_std_streams()
    # A frozen Windows program re-executes itself for each multiprocessing child;
    # without this call that child would open a second window.
    multiprocessing.freeze_support()
    if sys.argv[1:3] == ["-m", "agent"]:
        from agent.cli import main as agent_main

        del sys.argv[1:3]
        sys.exit(agent_main())

    from console.app import main

    sys.exit(main())
