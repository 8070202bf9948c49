"""The credits ledger: an append-only list of grants, debits and refunds, and the balance.

Each operation is one conditional UPDATE of the account row plus one ledger INSERT in
the caller's transaction. The debit's UPDATE carries `WHERE balance >= amount`: on
PostgreSQL it waits for the row lock held by a concurrent debit and re-checks the
condition against the committed balance; on SQLite writers take turns on the database
lock. Either way no interleaving can take the balance below zero, and a CHECK
constraint on the column stands behind the code. The ledger table itself refuses UPDATE
and DELETE (triggers in the migration), so history is never rewritten.

The caller commits, or rolls back (after InsufficientCredits too: on SQLite the failed
UPDATE has opened the write transaction): a debit can share its transaction with what it
pays for.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from platform_api.models import CreditAccount, CreditEntry, UTCDateTime, utcnow


class InsufficientCredits(Exception):
    def __init__(self, balance: int, amount: int) -> None:
        super().__init__(f"balance {balance} does not cover {amount} credits")
        self.balance = balance
        self.amount = amount


class RefundRefused(Exception):
    """The refund names no debit of this user, exceeds it, or the debit was refunded."""


class CreditLedger:
    def __init__(self, session: Session) -> None:
        self.session = session

    def open_account(self, user_id: str) -> None:
        self.session.add(CreditAccount(user_id=user_id, balance=0))

    def balance(self, user_id: str) -> int:
        account = self.session.get(CreditAccount, user_id, populate_existing=True)
        return account.balance if account else 0

    def grant(self, user_id: str, amount: int, reason: str) -> CreditEntry:
        return self._move(user_id, "grant", amount, reason)

    def debit(self, user_id: str, amount: int, reason: str) -> CreditEntry:
        """Take `amount` or raise InsufficientCredits, leaving the balance untouched."""
        return self._move(user_id, "debit", amount, reason)

    def refund(self, user_id: str, debit_id: int, amount: int, reason: str) -> CreditEntry:
        """Give back up to the whole of one debit, once."""
        debit = self.session.get(CreditEntry, debit_id)
        if debit is None or debit.user_id != user_id or debit.kind != "debit":
            raise RefundRefused(f"no debit {debit_id} for this user")
        if amount > debit.amount:
            raise RefundRefused(f"refund of {amount} exceeds the debit of {debit.amount}")
        try:
            return self._move(user_id, "refund", amount, reason, refund_of=debit_id)
        except IntegrityError:  # the unique refund_of: a second refund of the same debit
            self.session.rollback()
            raise RefundRefused(f"debit {debit_id} was already refunded") from None

    def entries(self, user_id: str, limit: int | None = 50) -> list[CreditEntry]:
        """Newest first; `limit=None` for all of them."""
        return list(
            self.session.exec(
                select(CreditEntry)
                .where(CreditEntry.user_id == user_id)
                .order_by(CreditEntry.id.desc())
                .limit(limit)
            )
        )

    def audit(self, user_id: str) -> tuple[int, int]:
        """(balance, what the ledger sums to): equal unless something bypassed the ledger."""
        total = 0
        for kind, amount in self.session.exec(
            select(CreditEntry.kind, func.sum(CreditEntry.amount))
            .where(CreditEntry.user_id == user_id)
            .group_by(CreditEntry.kind)
        ):
            total += -amount if kind == "debit" else amount
        return self.balance(user_id), total

    def _move(
        self, user_id: str, kind: str, amount: int, reason: str, refund_of: int | None = None
    ) -> CreditEntry:
        assert amount > 0, "a ledger amount is positive; the kind gives its direction"
        now = utcnow()
        params = {
            "p_user_id": user_id,
            "p_change": -amount if kind == "debit" else amount,
            "p_floor": amount if kind == "debit" else 0,  # the balance a debit needs
            "p_created_at": now,
            "p_kind": kind,
            "p_amount": amount,
            "p_reason": reason,
            "p_refund_of": refund_of,
        }
        # Core statements built once, on the session's connection and transaction: the
        # ORM's per-statement work costs more than the database's on this hot path (every
        # metered request debits once and refunds once).
        connection = self.session.connection()
        if connection.dialect.name == "postgresql":  # one statement, one round trip
            row = connection.execute(_MOVE_AND_ENTER, params).first()
            entry_id, balance_after = row if row else (None, None)
        else:  # SQLite has no UPDATE inside WITH: two statements, in-process
            entry_id = None
            balance_after = connection.execute(_MOVE, params).scalar_one_or_none()
            if balance_after is not None:
                entry_id = connection.execute(
                    _ENTER, {**params, "p_balance_after": balance_after}
                ).scalar_one()
        if balance_after is None:
            if kind == "debit" and self.session.get(CreditAccount, user_id) is not None:
                raise InsufficientCredits(self.balance(user_id), amount)
            raise LookupError(f"user {user_id} has no credit account")
        return CreditEntry(
            id=entry_id,
            user_id=user_id,
            kind=kind,
            amount=amount,
            balance_after=balance_after,
            reason=reason,
            refund_of=refund_of,
            created_at=now,
        )


_ACCOUNTS, _LEDGER = CreditAccount.__table__, CreditEntry.__table__
# The account's conditional UPDATE: `floor` is the amount for a debit (the balance must
# cover it), 0 otherwise.
_MOVE = (
    update(_ACCOUNTS)
    .where(
        _ACCOUNTS.c.user_id == bindparam("p_user_id"), _ACCOUNTS.c.balance >= bindparam("p_floor")
    )
    .values(
        balance=_ACCOUNTS.c.balance + bindparam("p_change"),
        updated_at=bindparam("p_created_at", type_=UTCDateTime()),
    )
    .returning(_ACCOUNTS.c.balance)
)
_ENTRY_COLUMNS = ["user_id", "kind", "amount", "balance_after", "reason", "refund_of", "created_at"]
_ENTER = (
    insert(_LEDGER)
    .values({c: bindparam(f"p_{c}", type_=_LEDGER.c[c].type) for c in _ENTRY_COLUMNS})
    .returning(_LEDGER.c.id)
)
# PostgreSQL: the UPDATE as a data-modifying CTE feeding the ledger INSERT; no row when
# the UPDATE matched none (no account, or a debit the balance does not cover).
_MOVED = _MOVE.cte("moved")
_MOVE_AND_ENTER = (
    insert(_LEDGER)
    .from_select(
        _ENTRY_COLUMNS,
        select(
            *(
                _MOVED.c.balance
                if c == "balance_after"
                else bindparam(f"p_{c}", type_=_LEDGER.c[c].type).label(c)
                for c in _ENTRY_COLUMNS
            )
        ).select_from(_MOVED),
    )
    .returning(_LEDGER.c.id, _LEDGER.c.balance_after)
    .add_cte(_MOVED)
)
