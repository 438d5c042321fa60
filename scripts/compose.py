"""Composition experiments: a thin entry point for ``diffuser compose`` (same sub-commands).

    python scripts/compose.py toy
    python scripts/compose.py maze obstacle --checkpoint runs/maze/umaze/train
    python scripts/compose.py maze prefer --checkpoint runs/maze/umaze/train
    python scripts/compose.py split --checkpoint runs/maze/umaze/train
"""

import sys

from diffuser.cli import main

if __name__ == "__main__":
    main(["compose", *sys.argv[1:]])
