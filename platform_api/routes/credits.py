"""The caller's credit balance, ledger, plan and token limits; what a message would cost."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from sqlalchemy import func
from sqlmodel import select

from platform_api.chats import owned_chat
from platform_api.credits import CreditLedger
from platform_api.deps import ChatsReader, SessionDep, UsageReader
from platform_api.metering import Pricing
from platform_api.models import Message
from platform_api.plans import grant_due, limits_of
from platform_api.schemas import (
    CostEstimate,
    CreditEntryPublic,
    CreditStatement,
    MessageCreate,
    PlanPublic,
    TokenLimits,
)
from platform_api.turns import context_messages, turn_bound

router = APIRouter(tags=["credits"])


@router.get("/credits", response_model=CreditStatement)
def read_credits(
    request: Request, user: UsageReader, session: SessionDep, limit: int = Query(50, ge=1, le=500)
) -> CreditStatement:
    grant_due(session, user)  # this month's plan credits show up when the balance is read
    ledger = CreditLedger(session)
    limits = limits_of(session, user)
    pricing = Pricing.from_settings(request.app.state.settings)
    balance = ledger.balance(user.id)
    return CreditStatement(
        balance=balance,
        balance_usd=pricing.usd(balance),
        credit_price_usd=pricing.credit_price_usd,
        entries=[CreditEntryPublic.model_validate(e) for e in ledger.entries(user.id, limit)],
        plan=PlanPublic.model_validate(limits.plan) if limits.plan else None,
        limits=TokenLimits(daily_token_limit=limits.daily, monthly_token_limit=limits.monthly),
    )


@router.post("/chats/{chat_id}/estimate", response_model=CostEstimate, tags=["messages"])
def estimate_message(
    chat_id: str, body: MessageCreate, request: Request, user: ChatsReader, session: SessionDep
) -> CostEstimate:
    """What sending `content` to this chat could cost at most (its history, system prompt
    and max_tokens included), and the balance it would be reserved from."""
    chat = owned_chat(session, user, chat_id)
    grant_due(session, user)
    last_seq = session.exec(select(func.max(Message.seq)).where(Message.chat_id == chat.id)).one()
    context = context_messages(session, chat, (last_seq or 0) + 1)
    prompt, completion = turn_bound(chat, [*context, {"content": body.content}])
    pricing = Pricing.from_settings(request.app.state.settings)
    credits = pricing.cost(prompt, completion)
    return CostEstimate(
        prompt_tokens_max=prompt,
        completion_tokens_max=completion,
        credits_max=credits,
        cost_usd_max=pricing.usd(credits),
        balance=CreditLedger(session).balance(user.id),
    )
