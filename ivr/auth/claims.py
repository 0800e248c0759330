"""The claim id of account digits a caller keys in that match no account. Pure: no Redis.

Such digits are kept only as a keyed digest, so a mistyped PIN keyed at the account prompt never
rests in clear (call state, audit, send caps, jobs).
"""

from __future__ import annotations

import hashlib
import hmac

UNMATCHED_PREFIX = "unmatched-"  # never all digits, so never mistaken for an account number


def unmatched_claim(key: str, digits: str) -> str:
    """The claim id of account digits that match no account: a keyed digest, never the digits.

    Keyed (HMAC, not a bare hash), because 6 to 12 digits are quickly enumerated; stable for one
    key, so the same wrong digits are one claim (one send-cap scope, one audit trail).
    """
    mac = hmac.new(key.encode(), f"claim\x1f{digits}".encode(), hashlib.sha256)
    return UNMATCHED_PREFIX + mac.hexdigest()[:32]
