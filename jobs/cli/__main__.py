"""`python -m jobs.cli`: the `safewatch` command."""

import sys

from jobs.cli import main

sys.exit(main())
