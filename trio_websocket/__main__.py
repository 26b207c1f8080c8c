"""``python -m trio_websocket``: the command line of ``_extras.cli``."""

import sys

from ._extras.cli import main

if __name__ == "__main__":
    sys.exit(main())
