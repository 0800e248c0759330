"""`ivr dev`'s side of the guardian process (ivr/devguard.py)."""

from __future__ import annotations

import contextlib
import subprocess
import sys


class Guardian:
    """The process that stops the stack if `ivr dev` is killed outright (see ivr/devguard.py).
    It is told of each process group as it starts and once it is stopped and reaped."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ivr.devguard"],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # neither Ctrl-C nor a closed terminal reaches it
        )

    def _tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):  # it was killed: `ivr dev` still stops its own
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def watch(self, pgid: int | None, last: bool = False) -> None:
        if pgid is not None:
            self._tell(f"{'+last' if last else '+'} {pgid}")

    def forget(self, pgid: int) -> None:
        self._tell(f"- {pgid}")

    def done(self) -> None:
        """`ivr dev` stopped everything itself."""
        self._tell("done")
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self.proc.wait()
