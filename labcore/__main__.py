"""`python -m labcore` is the `labcore` command."""
import sys

from labcore.cli import main

sys.exit(main())
