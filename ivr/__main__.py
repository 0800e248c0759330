"""`python -m ivr` is the `ivr` command, for child processes that must use this interpreter."""

from ivr.cli import main

main()
