"""A scripted population of chat users, for the feedback loop's tests and bench/loop.py.

Each user drives the platform API over HTTP only (register, log in, chat, regenerate,
rate), never its database, and prefers one property the model may lack: answers of at
most `max_words` words. A user asks a question; a short answer gets a thumbs up; a long
one is regenerated (up to `regenerations` times, each replaced answer a weak "rejected" in
the feedback export), and the answer the user ends with is rated up if short, down if not.
So the feedback says "shorter", which is what the loop must learn.

`Tally` counts what happened per answering model version: how many answers had the
property (the preferred-property rate bench/loop.py compares for champion and challenger),
and each rated answer's outcome in order (what a sequential test consumes).
"""

from __future__ import annotations

import re
import secrets
from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from orchard.demo import streamed_answer

QUESTIONS = (
    "What does json.dumps do?",
    "What is the indent argument of json.dumps for?",
    "How do I sort the keys when I serialize to JSON?",
    "What does json.loads return for a JSON array?",
    "How do I read a JSON file in Python?",
    "What is a Python dictionary?",
    "How do I open a file for writing?",
    "What does the with statement do?",
    "How do I split a string on commas?",
    "What is a list comprehension?",
    "How do I reverse a list?",
    "What does enumerate return?",
)
_WORD = re.compile(r"\S+")


def words(text: str) -> int:
    return len(_WORD.findall(text))


@dataclass
class Tally:
    """What the population saw, per answering model version (and in total)."""

    max_words: int
    answers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    preferred: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    outcomes: list[tuple[str, str | None, bool]] = field(default_factory=list)
    regenerations: int = 0
    ratings: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, answer: dict) -> bool:
        version = answer.get("model_version") or "unknown"
        liked = words(answer["content"]) <= self.max_words
        self.answers[version] += 1
        self.preferred[version] += liked
        return liked

    def rate(self, answer: dict, up: bool) -> None:
        self.ratings["up" if up else "down"] += 1
        self.outcomes.append((answer.get("model_version") or "unknown", answer.get("variant"), up))

    def rate_of(self, version: str | None = None) -> float:
        """The share of answers (of `version`, or all) with the preferred property."""
        keys = [version] if version else list(self.answers)
        total = sum(self.answers[k] for k in keys)
        return sum(self.preferred[k] for k in keys) / total if total else float("nan")


@dataclass
class ScriptedUser:
    email: str
    password: str
    id: str = ""
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Population:
    """`size` scripted users on the platform API at `api_url` (…/api/v1)."""

    def __init__(
        self,
        api_url: str,
        size: int,
        *,
        max_words: int = 12,
        regenerations: int = 1,
        prefix: str = "scripted",
        max_tokens: int | None = None,
        timeout: float = 300,
    ) -> None:
        if size < 1 or max_words < 1 or regenerations < 0:
            raise ValueError("need size >= 1, max_words >= 1 and regenerations >= 0")
        self.http = httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout)
        self.max_words, self.regenerations = max_words, regenerations
        self.max_tokens = max_tokens  # each chat's answer length cap (None: the default)
        run = secrets.token_hex(4)
        self.users = [
            ScriptedUser(f"{prefix}-{run}-{i}@example.org", secrets.token_urlsafe(16))
            for i in range(size)
        ]

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Population:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, response: httpx.Response, what: str) -> dict:
        if response.status_code >= 400:
            raise RuntimeError(f"{what} answered {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else {}

    def enrol(self) -> None:
        """Register and log in every user (the platform's default plan gives credits)."""
        for user in self.users:
            body = {"email": user.email, "password": user.password}
            user.id = self._check(
                self.http.post("/auth/register", json=body), f"registering {user.email}"
            )["id"]
            user.token = self._check(self.http.post("/auth/login", json=body), "login")[
                "access_token"
            ]

    def _turn(self, user: ScriptedUser, path: str, body: dict | None = None) -> dict:
        """One streamed turn; the saved answer (the `done` event's message)."""
        answer = streamed_answer(self.http, path, body, user.headers)
        if answer.get("status") == "failed":
            raise RuntimeError(f"the turn at {path} did not finish: {answer}")
        return answer

    def converse(
        self,
        questions: list[str] | tuple[str, ...] = QUESTIONS,
        model_alias: str | None = None,
        users: list[ScriptedUser] | None = None,
        tally: Tally | None = None,
    ) -> Tally:
        """Every user (of `users`, default all) asks every question in a chat of its own
        (on `model_alias`, or the platform's default with its A/B split), regenerates long
        answers and rates the last one."""
        tally = tally or Tally(self.max_words)
        settings = {"model_alias": model_alias, "max_tokens": self.max_tokens}
        for user in users or self.users:
            for question in questions:
                chat = self._check(
                    self.http.post(
                        "/chats",
                        json={"title": question[:40]}
                        | {k: v for k, v in settings.items() if v is not None},
                        headers=user.headers,
                    ),
                    "creating a chat",
                )
                base = f"/chats/{chat['id']}/messages"
                answer = self._turn(user, base, {"content": question})
                liked = tally.add(answer)
                for _ in range(self.regenerations):
                    if liked:
                        break
                    answer = self._turn(user, f"{base}/{answer['id']}/regenerate")
                    tally.regenerations += 1
                    liked = tally.add(answer)
                self._check(
                    self.http.put(
                        f"{base}/{answer['id']}/feedback",
                        json={"rating": "up" if liked else "down"},
                        headers=user.headers,
                    ),
                    "rating",
                )
                tally.rate(answer, liked)
        return tally

    def opt_out(self, user: ScriptedUser) -> None:
        """The privacy page's one click: "use my feedback to improve the model" off."""
        self._check(
            self.http.put(
                "/users/me/feedback-consent",
                json={"feedback_for_training": False},
                headers=user.headers,
            ),
            "opting out",
        )
