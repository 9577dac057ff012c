"""``python -m dspnet_export.transfer {detect,segment} ...``: :func:`.cli.main`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
