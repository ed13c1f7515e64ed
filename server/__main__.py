"""`python -m server`: the same as `deploy-server`."""

import sys

from server.cli import main

sys.exit(main())
