"""Operator commands for the platform database, run where the settings are:

    python -m platform_api.manage migrate
    python -m platform_api.manage make-admin someone@example.org
    python -m platform_api.manage grant-monthly   # this month's plan credits, idempotent

The first administrator cannot be made through the API (nobody could authorise it), so
it is made here, by whoever can reach the database.
"""

from __future__ import annotations

import sys

from sqlalchemy import update
from sqlmodel import Session

from orchard.errors import OrchardError
from orchard.settings import load_settings
from platform_api.db import database_url, make_engine, migrate
from platform_api.models import User, utcnow
from platform_api.plans import grant_monthly

USAGE = "usage: python -m platform_api.manage migrate | make-admin EMAIL | grant-monthly"


def make_admin(url: str, email: str) -> None:
    """Give the account with `email` the admin role; raise OrchardError if there is none."""
    engine = make_engine(url, pooled=False)
    try:
        with engine.begin() as connection:
            result = connection.execute(
                update(User)
                .where(User.email == email.strip().lower())
                .values(role="admin", updated_at=utcnow())
            )
        if result.rowcount != 1:
            raise OrchardError(f"no account with e-mail {email!r}: register it first")
    finally:
        engine.dispose()


def main(argv: list[str]) -> int:
    try:
        url = database_url(load_settings())
        if argv == ["migrate"]:
            migrate(url)
            print("platform database is at the newest schema")
        elif len(argv) == 2 and argv[0] == "make-admin":
            migrate(url)
            make_admin(url, argv[1])
            print(f"{argv[1]} is now an administrator")
        elif argv == ["grant-monthly"]:
            migrate(url)
            engine = make_engine(url, pooled=False)
            try:
                with Session(engine, expire_on_commit=False) as session:
                    granted = grant_monthly(session)
            finally:
                engine.dispose()
            print(f"granted this month's plan credits to {granted} account(s)")
        else:
            print(USAGE, file=sys.stderr)
            return 2
    except OrchardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
