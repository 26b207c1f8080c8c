"""``python -m trio_websocket``: the command line of ``_cli``."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
