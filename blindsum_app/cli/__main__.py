"""``python -m blindsum_app.cli``: the same as the ``blindsum`` command."""

import sys

from blindsum_app.cli.main import main

sys.exit(main())
