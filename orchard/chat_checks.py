"""What chat data must be: the common chat format an uploaded conversation is checked
against, and the Great Expectations rules the chat_data step's SFT and preference sets
must pass (as frames: one row per example, the columns the rules read).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from orchard.errors import OrchardError
from orchard.pii import EMAIL, PHONE_NUMBER

NEGATIVES = ("same_module", "truncated", "base_sample")
ROLES = ("system", "user", "assistant")
SPLITS = ("train", "heldout")


# -- uploads -----------------------------------------------------------------------------


def read_uploads(paths: Sequence[str]) -> list[tuple[str, list[dict]]]:
    """(row id, messages) of every uploaded conversation; a bad row is an OrchardError
    naming file:line and what is wrong with it."""
    rows = []
    shape = '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}'
    for index, name in enumerate(paths):
        path = Path(name)
        try:
            lines = path.read_bytes().splitlines()
        except OSError as error:
            raise OrchardError(f"cannot read upload {name}: {error.strerror or error}") from None
        for number, raw in enumerate(lines, 1):
            where = f"{name}:{number}"
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise OrchardError(f"{where}: not a JSON line ({error}); want {shape}") from None
            problem = conversation_problem(row)
            if problem:
                raise OrchardError(f"{where}: {problem}; each line must be {shape}")
            messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
            rows.append((f"upload-{index}-{path.stem}-{number}", messages))
    return rows


def conversation_problem(row: Any) -> str | None:
    """What is wrong with one row of the common chat format, or None."""
    if not isinstance(row, dict) or "messages" not in row:
        return 'the row has no "messages"'
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return '"messages" is not a non-empty list'
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"message {i} is not an object"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"message {i} has role {role!r}, not one of {', '.join(ROLES)}"
        if not isinstance(content, str) or not content.strip():
            return f"message {i} ({role}) has no text content (a non-empty string)"
    if messages[-1]["role"] != "assistant":
        return f"the last message is {messages[-1]['role']!r}, not the assistant's answer"
    if not any(m["role"] == "user" for m in messages):
        return "no message is the user's"
    return None


def uploads_sha256(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in paths:
        try:
            digest.update(hashlib.sha256(Path(name).read_bytes()).digest())
        except OSError as error:
            raise OrchardError(
                f"cannot read upload {name}: {error.strerror or error}: pass existing "
                "JSONL files in uploads"
            ) from None
    return digest.hexdigest()


# -- validation --------------------------------------------------------------------------


def sft_frame(rows: dict[str, list[dict]], held: set[str]) -> pd.DataFrame:
    records = [
        {
            "id": row["id"],
            "split": split,
            "source": row["source"],
            "last_role": row["messages"][-1]["role"],
            "n_answer_chars": len(row["messages"][-1]["content"].strip()),
            "text": "\n".join(m["content"] for m in row["messages"]),
            "heldout_in_train": split == "train" and row["entry"] in held,
        }
        for split in SPLITS
        for row in rows[split]
    ]
    return pd.DataFrame.from_records(
        records,
        columns=[
            "id",
            "split",
            "source",
            "last_role",
            "n_answer_chars",
            "text",
            "heldout_in_train",
        ],
    )


def preference_frame(rows: dict[str, list[dict]]) -> pd.DataFrame:
    records = [
        {
            "id": row["id"],
            "split": split,
            "negative": row["negative"],
            "n_chosen_chars": len(row["chosen"][-1]["content"].strip()),
            "n_rejected_chars": len(row["rejected"][-1]["content"].strip()),
            "chosen_is_rejected": row["chosen"][-1]["content"].strip()
            == row["rejected"][-1]["content"].strip(),
            "heldout_in_train": bool(row.pop("_leak")),
        }
        for split in SPLITS
        for row in rows[split]
    ]
    columns = ["id", "split", "negative", "n_chosen_chars", "n_rejected_chars"]
    return pd.DataFrame.from_records(
        records, columns=[*columns, "chosen_is_rejected", "heldout_in_train"]
    )


def sft_rules(max_chars: int) -> dict[str, Any]:
    import great_expectations as gx

    expect = gx.expectations
    return {
        "has_rows": expect.ExpectTableRowCountToBeBetween(min_value=1),
        "has_heldout": expect.ExpectColumnDistinctValuesToContainSet(
            column="split", value_set=["heldout"]
        ),
        "id_present": expect.ExpectColumnValuesToNotBeNull(column="id"),
        "id_unique": expect.ExpectColumnValuesToBeUnique(column="id"),
        "last_role_assistant": expect.ExpectColumnValuesToBeInSet(
            column="last_role", value_set=["assistant"]
        ),
        "answer_length": expect.ExpectColumnValuesToBeBetween(
            column="n_answer_chars", min_value=1, max_value=max_chars
        ),
        "no_heldout_in_train": expect.ExpectColumnValuesToBeInSet(
            column="heldout_in_train", value_set=[False]
        ),
        "no_email": expect.ExpectColumnValuesToNotMatchRegex(column="text", regex=EMAIL),
        "no_phone": expect.ExpectColumnValuesToNotMatchRegex(
            column="text", regex=PHONE_NUMBER.pattern
        ),
    }


def preference_rules(max_chars: int) -> dict[str, Any]:
    import great_expectations as gx

    expect = gx.expectations
    return {
        "has_rows": expect.ExpectTableRowCountToBeBetween(min_value=1),
        "id_present": expect.ExpectColumnValuesToNotBeNull(column="id"),
        "id_unique": expect.ExpectColumnValuesToBeUnique(column="id"),
        "negative_known": expect.ExpectColumnValuesToBeInSet(
            column="negative", value_set=list(NEGATIVES)
        ),
        "chosen_present": expect.ExpectColumnValuesToBeBetween(
            column="n_chosen_chars", min_value=1, max_value=max_chars
        ),
        "rejected_present": expect.ExpectColumnValuesToBeBetween(
            column="n_rejected_chars", min_value=1
        ),
        "chosen_differs": expect.ExpectColumnValuesToBeInSet(
            column="chosen_is_rejected", value_set=[False]
        ),
        "no_heldout_in_train": expect.ExpectColumnValuesToBeInSet(
            column="heldout_in_train", value_set=[False]
        ),
    }
