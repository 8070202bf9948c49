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

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from platform_api.models import CreditAccount, CreditEntry, utcnow


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
        change = -amount if kind == "debit" else amount
        statement = (
            update(CreditAccount)
            .where(CreditAccount.user_id == user_id)
            .values(balance=CreditAccount.balance + change, updated_at=utcnow())
            .returning(CreditAccount.balance)
        )
        if kind == "debit":
            statement = statement.where(CreditAccount.balance >= amount)
        balance_after = self.session.exec(statement).scalar_one_or_none()
        if balance_after is None:
            if kind == "debit" and self.session.get(CreditAccount, user_id) is not None:
                raise InsufficientCredits(self.balance(user_id), amount)
            raise LookupError(f"user {user_id} has no credit account")
        entry = CreditEntry(
            user_id=user_id,
            kind=kind,
            amount=amount,
            balance_after=balance_after,
            reason=reason,
            refund_of=refund_of,
        )
        self.session.add(entry)
        self.session.flush()
        return entry
