"""
C{python -m provisioner}: the command line.
"""

import sys

from provisioner.cli import main

sys.exit(main())
