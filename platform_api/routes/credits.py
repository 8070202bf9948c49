"""The caller's credit balance and ledger."""

from __future__ import annotations

from fastapi import APIRouter, Query

from platform_api.credits import CreditLedger
from platform_api.deps import CurrentUser, SessionDep
from platform_api.schemas import CreditEntryPublic, CreditStatement

router = APIRouter(tags=["credits"])


@router.get("/credits", response_model=CreditStatement)
def read_credits(
    user: CurrentUser, session: SessionDep, limit: int = Query(50, ge=1, le=500)
) -> CreditStatement:
    ledger = CreditLedger(session)
    return CreditStatement(
        balance=ledger.balance(user.id),
        entries=[CreditEntryPublic.model_validate(e) for e in ledger.entries(user.id, limit)],
    )
