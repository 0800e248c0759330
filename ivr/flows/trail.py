"""What the engine puts on a call's audit trail, and with which fields (`Ports.note`).

Pure: the engine calls these at the moments they name and hands the notes to its ports, which
store them (`ivr.auth.verifier.Verifier.note`). A note holds names and levels only, never what
the caller keyed or said, so nothing here can carry a secret or the digits of a claim.
"""

from __future__ import annotations

from collections.abc import Iterable

from ivr.assurance import Assurance

Note = tuple[str, dict[str, str]]

IDENTIFY = "identify"
OFFERED = "offered"
STEP_UP = "step_up"
ENQUEUED = "enqueued"
DOOR_SHUT = "enqueue_refused"


def identified(by_caller_id: bool) -> list[Note]:
    """A claim was made; whether it matched an account is for the ports to say, as only they
    can tell a claim id from the digest of digits that match nobody."""
    return [(IDENTIFY, {"detail": "caller_id" if by_caller_id else "keyed"})]


def offered(assurance: Assurance, step_id: str, method: str) -> list[Note]:
    """An authenticate step asks for `method`; asked of a caller who has already proved a
    factor, it steps them up towards a queue that needs more."""
    notes: list[Note] = []
    if assurance >= Assurance.one_factor:
        notes.append(
            (STEP_UP, {"method": method, "assurance": assurance.name, "detail": f"step={step_id}"})
        )
    notes.append((OFFERED, {"method": method, "detail": f"step={step_id}"}))
    return notes


def enqueued(assurance: Assurance, proofs: Iterable[str], queue: str) -> list[Note]:
    """The call is handed to `queue`, at this assurance, on these methods."""
    fields = {"queue": queue, "assurance": assurance.name, "method": ",".join(proofs)}
    return [(ENQUEUED, fields)]


def door_shut(assurance: Assurance, queue: str) -> list[Note]:
    """The flow led to `queue` but the proofs do not open it: the call goes elsewhere."""
    return [(DOOR_SHUT, {"queue": queue, "assurance": assurance.name})]
