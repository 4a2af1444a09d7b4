"""``python -m splice.conformance``: see :mod:`splice.conformance.cli`."""

import sys

from splice.conformance.cli import main

sys.exit(main())
