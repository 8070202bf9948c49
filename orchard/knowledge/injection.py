"""Instruction-like text in documents (prompt injection through a file).

A document meant to steer the model ("ignore previous instructions and ...", "you are
now ...", a fake system turn) is still only data: the platform never puts retrieved text
into a system prompt (platform_api/chat_knowledge.py frames it as quoted sources). This
detector finds such text at ingestion so administrators can see who uploaded what; it is
a list of patterns, tuned to miss little on the known phrasings rather than to prove
anything, and a match never blocks the upload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EXCERPT_CONTEXT = 80  # characters kept on each side of a match

_INSTRUCTIONS = r"(?:instructions?|prompts?|rules|directions|guidelines|context)"
RULES: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.IGNORECASE | re.MULTILINE)
    for name, pattern in {
        "ignore_instructions": (
            r"\b(?:ignore|disregard|forget|override|bypass|skip)\b[^.\n]{0,40}?"
            rf"\b(?:previous|prior|above|earlier|preceding|all|any|your|the|system)\b"
            rf"[^.\n]{{0,20}}?\b{_INSTRUCTIONS}"
        ),
        "new_instructions": r"\b(?:new|updated|real|actual)\s+(?:system\s+)?instructions?\s*:",
        "role_override": (
            r"\byou\s+are\s+(?:now|no\s+longer)\b|\bfrom\s+now\s+on,?\s+(?:you|act|respond)\b"
            r"|\bact\s+as\s+(?:an?\s+)?(?:unrestricted|jailbroken|different)\b"
        ),
        "reveal_prompt": (
            r"\b(?:reveal|print|show|repeat|output|leak)\b[^.\n]{0,30}?"
            r"\b(?:system\s+prompt|hidden\s+instructions|your\s+instructions)\b"
        ),
        "fake_turn": (
            r"<\|(?:im_start|system|start_header_id)\|>|^\s*#{0,3}\s*system\s*:"
            r"|\[/?(?:INST|SYS)\]|<</?SYS>>"
        ),
    }.items()
}


@dataclass(frozen=True)
class InjectionFlag:
    rule: str  # the name of the pattern that matched
    excerpt: str  # the match with up to EXCERPT_CONTEXT characters each side


def detect_injection(text: str) -> InjectionFlag | None:
    """The first instruction-like passage of `text`, or None."""
    for rule, pattern in RULES.items():
        match = pattern.search(text)
        if match is not None:
            start = max(0, match.start() - EXCERPT_CONTEXT)
            end = min(len(text), match.end() + EXCERPT_CONTEXT)
            excerpt = " ".join(text[start:end].split())
            return InjectionFlag(rule=rule, excerpt=excerpt)
    return None
