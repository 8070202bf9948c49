"""Token ids in, streamable text out: incremental detokenization and stop sequences.

Two facts make streaming text harder than decoding at the end:
- a byte-level token can end in the middle of a UTF-8 character, so the text of a prefix
  of the ids can end in U+FFFD that a later token completes; such a tail is held back;
- a stop sequence can arrive split over several tokens, so text that could still become
  the start of a stop sequence is held back until it cannot.
What is released is always a prefix of the final text, so the concatenated stream equals
the non-streamed answer.
"""

from __future__ import annotations

from typing import Protocol

REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class TextStream:
    """Feed generated token ids one at a time; get the text that is safe to send."""

    def __init__(self, tokenizer: Decoder, stop: tuple[str, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        # Decoding a window of recent ids (not all of them) keeps each step O(1); the
        # window starts where the previous complete text ended (TGI's prefix/read offsets).
        self._prefix = 0
        self._read = 0
        self.text = ""  # everything decoded so far (complete characters only)
        self.sent = 0  # characters of `text` already released
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add one token; return newly releasable text ('' while held back)."""
        assert not self.stopped, "push after a stop sequence matched"
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)
        return self._release(final=False)

    def finish(self) -> str:
        """No more tokens: release what was held back (incomplete bytes included)."""
        if not self.stopped:
            tail = self._decode(self._ids[self._prefix :])
            before = self._decode(self._ids[self._prefix : self._read])
            self.text += tail[len(before) :]
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        if self.stopped:
            return ""
        if self._stop:
            longest = max(len(s) for s in self._stop)
            start = max(0, self.sent - longest + 1)
            hits = [i for i in (self.text.find(s, start) for s in self._stop) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
                return self._take(len(self.text))
        end = len(self.text)
        if not final:
            end -= self._partial_stop_length()
        return self._take(end)

    def _partial_stop_length(self) -> int:
        """Length of the longest tail of the text that begins some stop sequence."""
        best = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self.text)), best, -1):
                if self.text.endswith(stop[:size]):
                    best = size
                    break
        return best

    def _take(self, end: int) -> str:
        end = max(end, self.sent)
        piece = self.text[self.sent : end]
        self.sent = end
        return piece
