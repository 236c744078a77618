"""``python -m vit_digits_client``: the ``vit-digits`` command line."""

import sys

from vit_digits_client.cli import main

sys.exit(main())
