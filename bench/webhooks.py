"""Runs the webhook latency benchmark (bench/README.md says what it measures):

.venv/bin/python bench/webhooks.py [--calls N] [--concurrency C] [--web-workers W]
"""

import sys
from pathlib import Path

if not __package__:  # run as a script: Python put bench/ on the path, not the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cli import main

if __name__ == "__main__":
    main()
