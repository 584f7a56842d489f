"""`python -m sweeps NAME` is `python -m sweeps.launch NAME`."""

import sys

from .launch import main

sys.exit(main())
