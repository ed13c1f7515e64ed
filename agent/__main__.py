"""`python -m agent`: the same as the `deploy-agent` command."""

from agent.cli import main

raise SystemExit(main())
