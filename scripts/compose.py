"""Composition experiments: a thin entry point for ``diffuser compose`` (same sub-commands).

    python scripts/compose.py toy
    python scripts/compose.py maze obstacle --checkpoint assets/checkpoints/maze_umaze
    python scripts/compose.py maze prefer --checkpoint assets/checkpoints/maze_umaze
    python scripts/compose.py split --checkpoint assets/checkpoints/maze_umaze
"""

import sys

from diffuser.cli import main

if __name__ == "__main__":
    main(["compose", *sys.argv[1:]])
