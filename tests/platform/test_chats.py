"""Chats and folders: CRUD, settings, pinning, ownership (another user's chat is a 404,
never a 403 with data), search over one's own chats (more in test_search.py), export."""

from __future__ import annotations

import pytest


def test_a_chat_starts_with_the_served_defaults_and_takes_settings(api):
    alice = api.user("alice")
    chat = api.chat(alice)
    assert chat["title"] == "New chat" and chat["pinned"] is False
    assert chat["model_alias"] == api.settings.serve_aliases[0]
    assert (chat["temperature"], chat["max_tokens"], chat["tone"]) == (0.7, 512, "neutral")

    custom = api.chat(
        alice,
        title="Poems",
        model_alias="challenger",
        temperature=1.2,
        max_tokens=64,
        system_prompt="You are a poet.",
        tone="formal",
    )
    fetched = api.http.get(f"/chats/{custom['id']}", headers=alice.headers).json()
    assert fetched == custom
    assert fetched["system_prompt"] == "You are a poet." and fetched["tone"] == "formal"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"tone": "angry"}, "tone"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"user_id": "someone-else"}, "user_id"),
        ({"id": "my-own-id"}, "'id'"),
        ({"model_alias": "gpt-4"}, "not served: use one of champion, challenger"),
    ],
)
def test_bad_chat_settings_are_refused_with_the_reason(api, body, fragment):
    alice = api.user("alice")
    response = api.http.post("/chats", json=body, headers=alice.headers)
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


def test_rename_pin_and_change_settings_touch_only_what_is_sent(api):
    alice = api.user("alice")
    chat = api.chat(alice, title="Draft", temperature=0.3)
    updated = api.http.patch(
        f"/chats/{chat['id']}", json={"title": "Final", "pinned": True}, headers=alice.headers
    )
    assert updated.status_code == 200
    body = updated.json()
    assert (body["title"], body["pinned"], body["temperature"]) == ("Final", True, 0.3)
    null = api.http.patch(f"/chats/{chat['id']}", json={"title": None}, headers=alice.headers)
    assert null.status_code == 422 and "title cannot be null" in null.json()["detail"]
    owner = api.http.patch(f"/chats/{chat['id']}", json={"user_id": "x"}, headers=alice.headers)
    assert owner.status_code == 422


def test_the_list_shows_pinned_chats_first_and_filters(api):
    alice = api.user("alice")
    first, second, third = (api.chat(alice, title=t) for t in ("first", "second", "third"))
    api.http.patch(f"/chats/{first['id']}", json={"pinned": True}, headers=alice.headers)
    titles = [c["title"] for c in api.http.get("/chats", headers=alice.headers).json()]
    assert titles[0] == "first" and set(titles) == {"first", "second", "third"}
    pinned = api.http.get("/chats", params={"pinned": True}, headers=alice.headers).json()
    assert [c["id"] for c in pinned] == [first["id"]]
    bad = api.http.get("/chats", params={"limit": 0}, headers=alice.headers)
    assert bad.status_code == 422 and "limit" in bad.json()["detail"]


def test_folders_group_chats_and_deleting_one_keeps_its_chats(api):
    alice = api.user("alice")
    folder = api.http.post("/folders", json={"name": "Work"}, headers=alice.headers)
    assert folder.status_code == 201
    folder_id = folder.json()["id"]
    duplicate = api.http.post("/folders", json={"name": "Work"}, headers=alice.headers)
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "folder_exists"

    inside = api.chat(alice, title="in", folder_id=folder_id)
    outside = api.chat(alice, title="out")
    moved = api.http.patch(
        f"/chats/{outside['id']}", json={"folder_id": folder_id}, headers=alice.headers
    )
    assert moved.json()["folder_id"] == folder_id
    listed = api.http.get("/chats", params={"folder_id": folder_id}, headers=alice.headers)
    assert {c["id"] for c in listed.json()} == {inside["id"], outside["id"]}
    out = api.http.patch(f"/chats/{outside['id']}", json={"folder_id": None}, headers=alice.headers)
    assert out.json()["folder_id"] is None

    renamed = api.http.patch(f"/folders/{folder_id}", json={"name": "Job"}, headers=alice.headers)
    assert renamed.json()["name"] == "Job"
    assert api.http.delete(f"/folders/{folder_id}", headers=alice.headers).status_code == 204
    kept = api.http.get(f"/chats/{inside['id']}", headers=alice.headers)
    assert kept.status_code == 200 and kept.json()["folder_id"] is None
    assert api.http.get("/folders", headers=alice.headers).json() == []


def test_another_users_folder_cannot_be_used_or_seen(api):
    alice, mallory = api.user("alice"), api.user("mallory")
    folder = api.http.post("/folders", json={"name": "Private"}, headers=alice.headers).json()
    mine = api.chat(mallory)
    for method, path, body in (
        ("PATCH", f"/folders/{folder['id']}", {"name": "pwned"}),
        ("DELETE", f"/folders/{folder['id']}", None),
        ("POST", "/chats", {"folder_id": folder["id"]}),
        ("PATCH", f"/chats/{mine['id']}", {"folder_id": folder["id"]}),
    ):
        response = api.http.request(method, path, json=body, headers=mallory.headers)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "folder not found", "code": "not_found"}
    assert api.http.get("/folders", headers=mallory.headers).json() == []
    assert api.http.get("/folders", headers=alice.headers).json()[0]["name"] == "Private"


def test_another_users_chat_is_not_found_whatever_is_tried(api):
    alice, mallory = api.user("alice"), api.user("mallory")
    chat = api.chat(alice, title="Secret plans", system_prompt="classified")
    nonexistent = "0" * 32
    for method, path, body in (
        ("GET", "/chats/{id}", None),
        ("PATCH", "/chats/{id}", {"title": "pwned"}),
        ("DELETE", "/chats/{id}", None),
        ("GET", "/chats/{id}/export", None),
        ("GET", "/chats/{id}/messages", None),
        ("POST", "/chats/{id}/messages", {"content": "hi"}),
        ("POST", "/chats/{id}/shares", None),
        ("GET", "/chats/{id}/shares", None),
    ):
        theirs = api.http.request(
            method, path.format(id=chat["id"]), json=body, headers=mallory.headers
        )
        missing = api.http.request(
            method, path.format(id=nonexistent), json=body, headers=mallory.headers
        )
        assert theirs.status_code == missing.status_code == 404, path
        assert theirs.json() == missing.json() == {"detail": "chat not found", "code": "not_found"}
    intact = api.http.get(f"/chats/{chat['id']}", headers=alice.headers)
    assert intact.status_code == 200 and intact.json()["title"] == "Secret plans"
    assert [c["id"] for c in api.http.get("/chats", headers=mallory.headers).json()] == []


def test_delete_removes_the_chat(api):
    alice = api.user("alice")
    chat = api.chat(alice)
    assert api.http.delete(f"/chats/{chat['id']}", headers=alice.headers).status_code == 204
    assert api.http.get(f"/chats/{chat['id']}", headers=alice.headers).status_code == 404
    assert api.http.delete(f"/chats/{chat['id']}", headers=alice.headers).status_code == 404


def test_search_finds_only_the_callers_chats_by_title(api):
    alice, mallory = api.user("alice"), api.user("mallory")
    recipe = api.chat(alice, title="Apple pie recipe")
    api.chat(alice, title="Tax return")
    api.chat(mallory, title="Apple orchard secrets")
    hits = api.http.get("/chats/search", params={"q": "APPLE"}, headers=alice.headers).json()
    assert [h["chat"]["id"] for h in hits] == [recipe["id"]]
    assert hits[0]["snippet"] == "Apple pie recipe"
    empty = api.http.get("/chats/search", params={"q": ""}, headers=alice.headers)
    assert empty.status_code == 422


def test_export_of_an_empty_chat_in_both_formats(api):
    alice = api.user("alice")
    chat = api.chat(alice, title="Notes", system_prompt="Be brief.")
    markdown = api.http.get(f"/chats/{chat['id']}/export", headers=alice.headers)
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert f'filename="chat-{chat["id"]}.md"' in markdown.headers["content-disposition"]
    assert markdown.text.startswith("# Notes\n") and "> Be brief." in markdown.text
    document = api.http.get(
        f"/chats/{chat['id']}/export", params={"format": "json"}, headers=alice.headers
    ).json()
    assert document["chat"]["id"] == chat["id"] and document["messages"] == []
    bad = api.http.get(
        f"/chats/{chat['id']}/export", params={"format": "pdf"}, headers=alice.headers
    )
    assert bad.status_code == 422 and "format" in bad.json()["detail"]
