"""Conversation monitoring for administrators: search every user's chats, read one (with
superseded messages marked), flag a chat or a message, resolve flags, export; users are
refused, and every write and every reading is in the audit log."""

from __future__ import annotations

import json

from testkit.serving_stub import Reply
from tests.platform.test_messages import _events, _messages, _send
from tests.platform.test_rewrites import _post


def talk(api, account, *questions: str, **chat_fields) -> tuple[dict, list[dict]]:
    chat = api.chat(account, **chat_fields)
    for question in questions:
        with _send(api, account, chat, question) as response:
            assert [kind for kind, _ in _events(response)][-1] == "done"
    return chat, _messages(api, account, chat)


def get(api, account, path: str, **params):
    response = api.http.get(path, params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def flag(api, account, chat: dict, **body):
    return api.http.post(
        f"/admin/conversations/{chat['id']}/flags", json=body, headers=account.headers
    )


def audited(api, root, action: str) -> list[dict]:
    return get(api, root, "/admin/audit", action=action)


def test_users_are_refused_every_endpoint(api, serving):
    alice = api.user("alice")
    chat, _ = talk(api, alice, "Hi")
    for method, path, body in (
        ("GET", "/admin/conversations", None),
        ("GET", f"/admin/conversations/{chat['id']}", None),
        ("GET", "/admin/conversations/export", None),
        ("POST", f"/admin/conversations/{chat['id']}/flags", {"reason": "mine"}),
        ("POST", "/admin/conversation-flags/x/resolve", None),
        ("GET", "/admin/conversation-flags", None),
    ):
        response = api.http.request(method, path, json=body, headers=alice.headers)
        assert (response.status_code, response.json()["code"]) == (403, "admin_required"), path
        assert api.http.request(method, path, json=body).status_code == 401


def test_search_finds_every_users_chats_with_snippets_and_is_audited(api, serving):
    alice, bob, carol, root = api.user("alice"), api.user("bob"), api.user("carol"), api.admin()
    a_chat, _ = talk(api, alice, "What should I pack for LISBON in May?", title="Trip")
    serving.script(Reply(pieces=["Lisbon is mild."]))
    b_chat, _ = talk(api, bob, "Weather?", title="Portugal")
    c_chat, _ = talk(api, carol, "Recipe for soup", title="Dinner")
    titled = api.chat(carol, title="Lisbon plans")  # no messages: found by its title

    hits = get(api, root, "/admin/conversations", q="lisbon")
    assert [h["id"] for h in hits] == [titled["id"], b_chat["id"], a_chat["id"]]  # newest first
    by_id = {h["id"]: h for h in hits}
    assert by_id[a_chat["id"]]["user"] == {"id": alice.id, "email": alice.email}
    assert by_id[a_chat["id"]]["snippet"] == "What should I pack for LISBON in May?"
    assert by_id[b_chat["id"]]["snippet"] == "Lisbon is mild."
    assert by_id[titled["id"]]["snippet"] == "Lisbon plans"
    assert (by_id[a_chat["id"]]["message_count"], by_id[titled["id"]]["message_count"]) == (2, 0)
    assert by_id[a_chat["id"]]["model_alias"] == a_chat["model_alias"]
    assert by_id[a_chat["id"]]["open_flags"] == 0

    only_bob = get(api, root, "/admin/conversations", q="lisbon", user_id=bob.id)
    assert [h["id"] for h in only_bob] == [b_chat["id"]]
    assert get(api, root, "/admin/conversations", q="%") == []  # wildcards are text
    everything = get(api, root, "/admin/conversations")
    assert {h["id"] for h in everything} == {a_chat["id"], b_chat["id"], c_chat["id"], titled["id"]}
    assert everything[0]["snippet"] is None
    assert [h["id"] for h in get(api, root, "/admin/conversations", limit=1, offset=1)] == [
        c_chat["id"]
    ]

    searches = audited(api, root, "conversation.search")
    assert [e["target"] for e in searches] == ["%", "lisbon", "lisbon"]  # listings are not
    assert searches[-1]["detail"]["hits"] == [h["id"] for h in hits]
    for params in ({"q": ""}, {"flagged": "maybe"}, {"limit": 0}, {"limit": 501}):
        response = api.http.get("/admin/conversations", params=params, headers=root.headers)
        assert response.status_code == 422, params


def test_flag_shows_in_flagged_counts_and_resolves_once(api, serving):
    alice, root = api.user("alice"), api.admin()
    chat, (question, answer) = talk(api, alice, "Something odd")
    other, _ = talk(api, alice, "Something fine")

    created = flag(api, root, chat, reason="  harmful advice ", message_id=answer["id"])
    assert created.status_code == 201, created.text
    first = created.json()
    assert first["chat_id"] == chat["id"] and first["message_id"] == answer["id"]
    assert first["reason"] == "harmful advice"
    assert first["flagged_by"] == {"id": root.id, "email": root.email}
    assert (first["resolved_at"], first["resolved_by"]) == (None, None)
    whole = flag(api, root, chat, reason="check the whole chat").json()
    assert whole["message_id"] is None

    flagged = get(api, root, "/admin/conversations", flagged="open")
    assert [(h["id"], h["open_flags"]) for h in flagged] == [(chat["id"], 2)]
    assert get(api, root, "/admin/conversations", flagged="resolved") == []
    assert [f["id"] for f in get(api, root, "/admin/conversation-flags")] == [
        whole["id"],
        first["id"],
    ]

    resolved = api.http.post(
        f"/admin/conversation-flags/{first['id']}/resolve", headers=root.headers
    )
    assert resolved.status_code == 200
    assert resolved.json()["resolved_by"] == {"id": root.id, "email": root.email}
    again = api.http.post(f"/admin/conversation-flags/{first['id']}/resolve", headers=root.headers)
    assert again.json() == resolved.json()  # idempotent: the first resolution stands
    by_id = {h["id"]: h for h in get(api, root, "/admin/conversations")}
    assert (by_id[chat["id"]]["open_flags"], by_id[other["id"]]["open_flags"]) == (1, 0)
    assert [f["id"] for f in get(api, root, "/admin/conversation-flags", status="resolved")] == [
        first["id"]
    ]
    assert len(get(api, root, "/admin/conversation-flags", status="any")) == 2

    api.http.post(f"/admin/conversation-flags/{whole['id']}/resolve", headers=root.headers)
    assert get(api, root, "/admin/conversations", flagged="open") == []
    assert [h["id"] for h in get(api, root, "/admin/conversations", flagged="resolved")] == [
        chat["id"]
    ]
    assert [h["id"] for h in get(api, root, "/admin/conversations", flagged="any")] == [chat["id"]]

    assert len(audited(api, root, "conversation.flag")) == 2
    resolutions = audited(api, root, "conversation.flag_resolve")
    assert sorted(e["target"] for e in resolutions) == sorted([first["id"], whole["id"]])
    assert all(e["actor_id"] == root.id for e in resolutions)


def test_a_flag_must_name_a_message_of_the_chat_and_a_reason(api, serving):
    alice, bob, root = api.user("alice"), api.user("bob"), api.admin()
    chat, _ = talk(api, alice, "Mine")
    _, (_, bobs_answer) = talk(api, bob, "His")
    refused = flag(api, root, chat, reason="wrong chat", message_id=bobs_answer["id"])
    assert refused.status_code == 422
    assert refused.json()["code"] == "message_not_in_chat"
    assert bobs_answer["id"] in refused.json()["detail"]
    assert flag(api, root, chat, reason="x", message_id="nosuchmessage").status_code == 422
    for body in ({"reason": "   "}, {}, {"reason": "x" * 2001}, {"reason": "x", "chat_id": "y"}):
        assert flag(api, root, chat, **body).status_code == 422, body
    missing = api.http.post(
        "/admin/conversations/nosuchchat/flags", json={"reason": "x"}, headers=root.headers
    )
    assert missing.status_code == 404
    resolve = api.http.post("/admin/conversation-flags/nosuchflag/resolve", headers=root.headers)
    assert resolve.status_code == 404
    assert get(api, root, "/admin/conversation-flags", status="any") == []
    assert audited(api, root, "conversation.flag") == []


def test_reading_a_conversation_shows_superseded_messages_and_flags_and_is_audited(api, serving):
    alice, root = api.user("alice"), api.admin()
    serving.script(Reply(pieces=["First answer."]))
    chat, (_, old) = talk(api, alice, "Tell me")
    serving.script(Reply(pieces=["Second answer."]))
    with _post(api, alice, chat, old["id"], "regenerate") as response:
        _events(response)
    flagged = flag(api, root, chat, reason="look", message_id=old["id"]).json()

    detail = get(api, root, f"/admin/conversations/{chat['id']}")
    assert detail["chat"]["id"] == chat["id"] and detail["chat"]["title"] == chat["title"]
    assert detail["user"] == {"id": alice.id, "email": alice.email}
    shown = [(m["role"], m["content"], m["superseded_at"] is not None) for m in detail["messages"]]
    assert shown == [
        ("user", "Tell me", False),
        ("assistant", "First answer.", True),
        ("assistant", "Second answer.", False),
    ]
    assert [f["id"] for f in detail["flags"]] == [flagged["id"]]
    views = audited(api, root, "conversation.view")
    assert [(e["target"], e["detail"]["user_id"]) for e in views] == [(chat["id"], alice.id)]
    assert api.http.get("/admin/conversations/nosuchchat", headers=root.headers).status_code == 404
    # the superseded answer is not searched, like in the user's own search
    assert get(api, root, "/admin/conversations", q="First answer") == []


def test_export_is_a_download_of_the_matching_chats_with_messages_and_flags(api, serving):
    alice, bob, root = api.user("alice"), api.user("bob"), api.admin()
    a_chat, _ = talk(api, alice, "Flag me")
    b_chat, _ = talk(api, bob, "Leave me")
    resolved_chat, _ = talk(api, bob, "Was flagged")
    mark = flag(api, root, a_chat, reason="review").json()
    old = flag(api, root, resolved_chat, reason="done").json()
    api.http.post(f"/admin/conversation-flags/{old['id']}/resolve", headers=root.headers)

    response = api.http.get(
        "/admin/conversations/export", params={"flagged": "open"}, headers=root.headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;") and disposition.endswith('.jsonl"')
    records = [json.loads(line) for line in response.text.splitlines()]
    assert [r["chat"]["id"] for r in records] == [a_chat["id"]]
    assert records[0]["user"] == {"id": alice.id, "email": alice.email}
    assert [m["content"] for m in records[0]["messages"]] == ["Flag me", "Hello, world!"]
    assert [f["id"] for f in records[0]["flags"]] == [mark["id"]]

    as_json = api.http.get(
        "/admin/conversations/export",
        params={"flagged": "any", "format": "json"},
        headers=root.headers,
    )
    assert as_json.headers["content-type"].startswith("application/json")
    assert as_json.headers["content-disposition"].endswith('.json"')
    assert [r["chat"]["id"] for r in as_json.json()] == [resolved_chat["id"], a_chat["id"]]

    everything = get_text(api, root, limit=2)
    assert [json.loads(line)["chat"]["id"] for line in everything.splitlines()] == [
        resolved_chat["id"],
        b_chat["id"],
    ]
    found = get_text(api, root, q="leave")
    assert [json.loads(line)["chat"]["id"] for line in found.splitlines()] == [b_chat["id"]]
    empty = api.http.get(
        "/admin/conversations/export",
        params={"format": "json", "q": "nothing like it"},
        headers=root.headers,
    )
    assert empty.json() == []

    exports = audited(api, root, "conversation.export")
    assert (
        exports[-1]["detail"]["chats"] == [a_chat["id"]]
        and exports[-1]["detail"]["flagged"] == "open"
    )
    assert len(exports) == 5
    for params in ({"flagged": "resolved"}, {"format": "csv"}, {"limit": 1001}):
        bad = api.http.get("/admin/conversations/export", params=params, headers=root.headers)
        assert bad.status_code == 422, params


def get_text(api, account, **params) -> str:
    response = api.http.get("/admin/conversations/export", params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.text
