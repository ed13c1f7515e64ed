"""`python -m console`: same as `deploy-console`."""

import sys

from console.app import main

sys.exit(main())
