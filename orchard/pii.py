"""The PII patterns every data step shares: what curate replaces, what chat_data cleans
the same way, and what validation and chat_data's suite refuse to find afterwards.

datatrove's `PIIFormatter` replaces e-mail addresses and IPs; phone numbers are Orchard's
own (`PHONE_NUMBER`, replaced by `PHONE_PLACEHOLDER`). Plain `re` only: importing this
module costs nothing (no datatrove, no language model).
"""

from __future__ import annotations

import re

PHONE_PLACEHOLDER = "<PHONE>"

# International or North-American style numbers with separators; digit runs without
# separators (ids, years, prices) are left alone.
PHONE_NUMBER = re.compile(
    # Anchored so dotted numbers (the IP placeholders PIIFormatter writes) are not phones.
    r"(?<![\w+.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}(?!\w|[.-]\d)"
)

# An e-mail address that is not one of the placeholders datatrove's PIIFormatter writes
# (email@example.com / firstname.lastname@example.org: example.com/.org are reserved for
# examples, so no address there is anyone's). Searched from the "@" (ten times faster on
# long texts than from the name).
EMAIL = (
    r"@(?<=[A-Za-z0-9._%+-]@)(?!example\.(?:com|org)\b)"
    r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)


def replace_phone_numbers(text: str) -> str:
    """`text` with every phone number replaced by `PHONE_PLACEHOLDER`."""
    return PHONE_NUMBER.sub(PHONE_PLACEHOLDER, text)
