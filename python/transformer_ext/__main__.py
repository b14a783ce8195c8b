"""``python -m transformer_ext <command>``: see transformer_ext.cli."""
import sys

from .cli import main

sys.exit(main())
