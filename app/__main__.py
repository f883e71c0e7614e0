"""`python -m influence_app`: serve the influence app (see `influence_app.cli`)."""

import sys

from influence_app.cli import main

sys.exit(main())
