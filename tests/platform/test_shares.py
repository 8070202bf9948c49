"""Read-only share links: public view without credentials, nothing about the owner,
revocable, and only the owner can make or revoke them."""

from __future__ import annotations


def _share(api, account, chat):
    response = api.http.post(f"/chats/{chat['id']}/shares", headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_share_link_shows_the_chat_to_anyone_until_revoked(api, serving):
    alice = api.user("alice")
    chat = api.chat(alice, title="How to prune", system_prompt="private instructions")
    with api.http.stream(
        "POST", f"/chats/{chat['id']}/messages", json={"content": "When?"}, headers=alice.headers
    ) as response:
        response.read()
    link = _share(api, alice, chat)
    assert link["path"] == f"/api/v1/shared/{link['token']}"

    public = api.http.get(f"/shared/{link['token']}")  # no Authorization header
    assert public.status_code == 200
    view = public.json()
    assert view["title"] == "How to prune"
    assert [(m["role"], m["content"]) for m in view["messages"]] == [
        ("user", "When?"),
        ("assistant", "Hello, world!"),
    ]
    assert set(view) == {"title", "messages"}  # no owner, no settings, no system prompt
    assert "private instructions" not in public.text and alice.email not in public.text

    listed = api.http.get(f"/chats/{chat['id']}/shares", headers=alice.headers).json()
    assert [s["id"] for s in listed] == [link["id"]] and "token" not in listed[0]
    revoke = api.http.delete(f"/chats/{chat['id']}/shares/{link['id']}", headers=alice.headers)
    assert revoke.status_code == 204
    gone = api.http.get(f"/shared/{link['token']}")
    assert gone.status_code == 404 and gone.json()["detail"] == "shared chat not found"


def test_only_the_owner_can_revoke_and_made_up_tokens_find_nothing(api):
    alice, mallory = api.user("alice"), api.user("mallory")
    chat = api.chat(alice)
    link = _share(api, alice, chat)
    theirs = api.http.delete(f"/chats/{chat['id']}/shares/{link['id']}", headers=mallory.headers)
    assert theirs.status_code == 404
    own_chat = api.chat(mallory)
    crossed = api.http.delete(
        f"/chats/{own_chat['id']}/shares/{link['id']}", headers=mallory.headers
    )
    assert crossed.status_code == 404
    assert api.http.get(f"/shared/{link['token']}").status_code == 200
    assert api.http.get("/shared/made-up-token").status_code == 404


def test_deleting_the_chat_or_banning_its_owner_ends_the_link(api):
    root, alice = api.admin(), api.user("alice")
    kept, deleted = api.chat(alice), api.chat(alice)
    kept_link, deleted_link = _share(api, alice, kept), _share(api, alice, deleted)
    api.http.delete(f"/chats/{deleted['id']}", headers=alice.headers)
    assert api.http.get(f"/shared/{deleted_link['token']}").status_code == 404
    assert api.http.get(f"/shared/{kept_link['token']}").status_code == 200
    api.http.patch(f"/admin/users/{alice.id}", json={"status": "banned"}, headers=root.headers)
    assert api.http.get(f"/shared/{kept_link['token']}").status_code == 404
