"""`python -m bench webhooks|realistic` from the checkout (bench/README.md)."""

import sys
from pathlib import Path

if not __package__:  # run as `python bench`: Python put bench/ on the path, not the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click

from bench.cli import main as webhooks
from bench.realistic import realistic


@click.group()
def bench() -> None:
    """secure-ivr's benchmarks against the real services (bench/README.md)."""


bench.add_command(webhooks, "webhooks")
bench.add_command(realistic, "realistic")

if __name__ == "__main__":
    bench()
