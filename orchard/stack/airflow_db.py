"""Connection arguments of the local stack's Airflow metadata database (SQLite).

Airflow imports these by name (`[database] sql_alchemy_connect_args` and its async twin,
set by `orchard.stack.services`). SQLite lets one writer at a time in; Python's sqlite3
waits 5 s for the lock by default, and on 2 busy cores Airflow's API server, scheduler,
DAG processor and task runners together can hold it longer: `make run` failed once with
a 500 "Database error" (`database is locked`) on unpausing `orchard_build` while tests
ran beside it. A writer now waits up to a minute instead of failing.
"""

BUSY_TIMEOUT_S = 60

SQLITE_CONNECT_ARGS = {"timeout": BUSY_TIMEOUT_S}
SQLITE_ASYNC_CONNECT_ARGS = {"timeout": BUSY_TIMEOUT_S}
