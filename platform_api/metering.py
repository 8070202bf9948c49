"""Metering: what a request to a model may cost is reserved before serving is called, and
settled from serving's `usage` when the request ends.

Why reserve first: a balance must never go negative, also under concurrent requests, and
the real cost is known only at the end. The reservation is one ledger debit of the most
the request can cost (an upper bound of its prompt tokens plus `n × max_tokens`), taken
with the ledger's conditional UPDATE, so concurrent requests cannot overspend; settling
refunds the unused part (one refund of that debit) and writes a `UsageRecord`.

The prompt bound: Orchard's tokenizers are byte-level BPE, so a text never has more
tokens than UTF-8 bytes; each message adds at most `TEMPLATE_TOKENS_PER_MESSAGE` for
the chat template's role markers, and tool definitions `TEMPLATE_TOKENS_FOR_TOOLS` for
the template's instructions around their JSON. A text completion's prompt is bounded the
same way (or counted, when sent as token ids), each of its `n` choices of each prompt by
`max_tokens`. An embeddings request has only input tokens: the embedding model's
WordPiece tokens are never more than the text's bytes, plus its two special tokens.
A request that does not finish (the client left, or serving broke off) is billed for
the completion pieces it received and no prompt.

The same path meters the OpenAI gateway and chat turns (`turns.py`, source "chat"). Before
the debit, `reserve` checks the caller's token limits against the same bound
(`plans.check_token_limits`); the caller grants the month's plan credits first
(`plans.grant_due`). A chat turn reserves inside the transaction that writes its
messages (`commit=False`), so a refused turn writes nothing and a written one is paid for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine, bindparam, insert
from sqlmodel import Session

from orchard.settings import Settings
from platform_api.credits import CreditLedger
from platform_api.models import UsageRecord, User, utcnow
from platform_api.plans import check_token_limits

log = logging.getLogger("platform_api.metering")

TEMPLATE_TOKENS_PER_MESSAGE = 8
TEMPLATE_TOKENS_PER_PROMPT = 8  # the generation prompt after the last message
# What a chat template adds around tool definitions (their JSON is counted byte for byte):
# the instructions templates such as Llama 3.1's and Qwen 2.5's write are 100-300 tokens.
TEMPLATE_TOKENS_FOR_TOOLS = 512


@dataclass(frozen=True)
class Pricing:
    prompt_per_1k: int
    completion_per_1k: int
    credit_price_usd: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Pricing:
        return cls(
            settings.credits_per_1k_prompt_tokens,
            settings.credits_per_1k_completion_tokens,
            settings.credit_price_usd,
        )

    def usd(self, credits: int | None) -> float | None:
        """What `credits` cost in US dollars (None stays None: nothing was charged yet)."""
        return None if credits is None else round(credits * self.credit_price_usd, 9)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Credits, rounded up to a whole credit."""
        milli = prompt_tokens * self.prompt_per_1k + completion_tokens * self.completion_per_1k
        return -(-milli // 1000)


def prompt_token_bound(texts: list[str], tools: bool = False) -> int:
    """A chat prompt's bound from its messages' texts (`tools`: the request defines tools,
    whose JSON is among `texts` and whose template instructions cost more)."""
    return (
        TEMPLATE_TOKENS_PER_PROMPT
        + (TEMPLATE_TOKENS_FOR_TOOLS if tools else 0)
        + sum(len(text.encode()) + TEMPLATE_TOKENS_PER_MESSAGE for text in texts)
    )


def text_token_bound(prompt: str | list[int], special: int = TEMPLATE_TOKENS_PER_PROMPT) -> int:
    """One completion prompt's or embedding input's bound: given as token ids, their
    count; as text, its UTF-8 bytes plus `special` tokens the tokenizer may add (BOS;
    an embedding model's [CLS] and [SEP])."""
    return len(prompt) if isinstance(prompt, list) else len(prompt.encode()) + special


@dataclass(frozen=True)
class Reservation:
    user_id: str
    api_key_id: str | None
    debit_id: int | None  # None when the bound costs nothing (free pricing)
    credits: int


@dataclass(frozen=True)
class Usage:
    model: str
    model_version: str | None
    status: str  # complete | partial | failed
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    variant: str | None = None  # the side of the A/B split that answered, if split


def reserve(
    session: Session,
    user: User,
    api_key_id: str | None,
    pricing: Pricing,
    prompt_tokens: int,
    completion_tokens: int,
    what: str,
    *,
    commit: bool = True,
) -> Reservation:
    """Check the token limits for the bound (a 429 ApiError), then debit what it costs
    (InsufficientCredits when the balance does not cover it). With `commit=False` the
    debit joins the caller's transaction, which the caller commits or rolls back; else
    it is committed now, and a refusal rolls the session back."""
    try:
        check_token_limits(session, user, prompt_tokens + completion_tokens)
        credits = pricing.cost(prompt_tokens, completion_tokens)
        if credits <= 0:
            return Reservation(user.id, api_key_id, None, 0)
        entry = CreditLedger(session).debit(user.id, credits, f"reserved for {what}"[:200])
        if commit:
            session.commit()
    except Exception:
        if commit:
            session.rollback()
        raise
    return Reservation(user.id, api_key_id, entry.id, credits)


def settle(
    engine: Engine, pricing: Pricing, reservation: Reservation, usage: Usage, source: str
) -> UsageRecord:
    """Refund what the reservation did not use and record the usage, in one transaction."""
    with Session(engine, expire_on_commit=False) as session:
        record = record_usage(session, pricing, reservation, usage, source)
        session.commit()
        return record


def record_usage(
    session: Session, pricing: Pricing, reservation: Reservation, usage: Usage, source: str
) -> UsageRecord:
    """`settle` in the caller's transaction (a chat turn saves its answer in the same one)."""
    cost = pricing.cost(usage.prompt_tokens, usage.completion_tokens)
    if cost > reservation.credits:
        # Cannot happen with the byte bound; if it does, the excess is not charged.
        log.warning(
            "usage of %s cost %d credits, more than the %d reserved: charging the reservation",
            reservation.user_id,
            cost,
            reservation.credits,
        )
        cost = reservation.credits
    if reservation.debit_id is not None and cost < reservation.credits:
        CreditLedger(session).refund(
            reservation.user_id,
            reservation.debit_id,
            reservation.credits - cost,
            f"unused part of reservation {reservation.debit_id}",
        )
    values = {
        "user_id": reservation.user_id,
        "api_key_id": reservation.api_key_id,
        "source": source,
        "model": usage.model[:200],
        "model_version": usage.model_version,
        "status": usage.status,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "credits": cost,
        "latency_ms": usage.latency_ms,
        "variant": usage.variant,
        "created_at": utcnow(),
    }
    # A Core statement built once, on the session's transaction: cheaper than the ORM's
    # unit of work, and settling a stream is between its last token and its [DONE].
    record_id = (
        session.connection().execute(_RECORD, {f"p_{k}": v for k, v in values.items()}).scalar_one()
    )
    return UsageRecord(id=record_id, **values)


_USAGE = UsageRecord.__table__
_RECORD = (
    insert(_USAGE)
    .values({c.name: bindparam(f"p_{c.name}", type_=c.type) for c in _USAGE.c if c.name != "id"})
    .returning(_USAGE.c.id)
)
