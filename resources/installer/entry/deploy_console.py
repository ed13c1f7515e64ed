"""Frozen entry point of `deploy-console` (PyInstaller runs this file, not a module).

`deploy-console -m agent ...` runs the bundled agent instead of the window, so code
that starts an agent as `[sys.executable, "-m", "agent", ...]` (the demo fleet, the
self-test's default) works the same frozen as from a virtual environment.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    # A frozen Windows program re-executes itself for each multiprocessing child;
    # without this call that child would open a second window.
    multiprocessing.freeze_support()
    if sys.argv[1:3] == ["-m", "agent"]:
        from agent.cli import main as agent_main

        del sys.argv[1:3]
        sys.exit(agent_main())

    from console.app import main

    sys.exit(main())
