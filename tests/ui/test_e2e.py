"""The web UI end to end: headless Chromium against the platform API serving `ui/dist`,
in front of real serving with two tiny registered models (tests/ui/conftest.py).

The tests run in any order: the promotion test starts from the first version as champion
and puts it back after.
Screenshots land in test-artifacts/ui/ (tests/ui/README.md).
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlmodel import Session, func, select

from platform_api.db import make_engine
from platform_api.models import Message
from testkit.documents import make_pdf
from tests.platform.conftest import PASSWORD, Account
from tests.platform.test_gateway import grant, new_key
from tests.ui.conftest import ARTIFACTS, Product, new_page

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ANSWER_TIMEOUT = 180_000  # ms: a busy 2-core machine streams a 512-token answer slowly
MOBILE = {"viewport": {"width": 375, "height": 812}, "device_scale_factor": 1}

# Records, at every change of the page, the status and text length of the last answer.
RECORD_GROWTH = """() => {
  window.__growth = [];
  const record = () => {
    const answers = document.querySelectorAll('[data-testid="message"][data-role="assistant"]');
    const last = answers[answers.length - 1];
    if (!last) return;
    const body = last.querySelector('[data-testid="message-content"]');
    window.__growth.push([last.dataset.status, body ? body.textContent.length : 0]);
  };
  new MutationObserver(record).observe(document.body, {
    subtree: true, childList: true, characterData: true, attributes: true,
    attributeFilter: ["data-status"],
  });
}"""


# -- what a person does ------------------------------------------------------------------
def home_ready(page: Page, product: Product) -> None:
    page.wait_for_url(f"{product.url}/")
    expect(page.get_by_test_id("composer")).to_be_enabled()


def register(page: Page, product: Product, name: str) -> Account:
    email = f"{name}@example.org"
    page.goto(f"{product.url}/register")
    page.get_by_test_id("email").fill(email)
    page.get_by_test_id("display-name").fill(name.title())
    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("register-submit").click()
    home_ready(page, product)
    return Account(email=email, id="")


def log_in(page: Page, product: Product, account: Account) -> None:
    page.goto(f"{product.url}/login")
    page.get_by_test_id("email").fill(account.email)
    page.get_by_test_id("password").fill(account.password)
    page.get_by_test_id("login-submit").click()
    home_ready(page, product)


def send(page: Page, text: str) -> None:
    composer = page.get_by_test_id("composer")
    composer.fill(text)
    composer.press("Enter")


def messages(page: Page, role: str):
    return page.locator(f'[data-testid="message"][data-role="{role}"]')


def last_answer(page: Page):
    return messages(page, "assistant").last


def wait_answer(page: Page) -> str:
    """Until the last answer is complete; returns its text."""
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-status", "complete", timeout=ANSWER_TIMEOUT)
    return answer.get_by_test_id("message-content").inner_text()


def no_horizontal_scroll(page: Page) -> None:
    page.wait_for_load_state("networkidle")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{page.url} is {width} px wide at 375 px: it scrolls sideways"


def screenshot(page: Page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def words(text: str) -> str:
    """Text with its white space collapsed: a line break of the raw text is a space once
    the Markdown renders it."""
    return " ".join(text.split())


def version_in(text: str, version: str) -> bool:
    return re.search(rf"(?<!\d){re.escape(version)}(?!\d)", text) is not None


# -- the tests -----------------------------------------------------------------------------
def test_register_log_in_chat_streams_and_a_reload_keeps_the_chat(browser, product, page, request):
    register(page, product, "ada")
    # the same account from another browser, through the login form
    page = new_page(browser, request, viewport={"width": 1280, "height": 800})
    log_in(page, product, Account(email="ada@example.org", id=""))
    page.evaluate(RECORD_GROWTH)
    question = "Hello! Tell me about apples."
    send(page, question)
    expect(messages(page, "user").last.get_by_test_id("message-content")).to_have_text(question)
    answer = wait_answer(page)
    assert answer.strip()
    page.wait_for_load_state("networkidle")
    answer = last_answer(page).get_by_test_id("message-content").inner_text()

    growth = page.evaluate("window.__growth")
    streaming = sorted({length for status, length in growth if status == "streaming" and length})
    assert len(streaming) >= 2, f"the answer did not appear progressively: {growth[-20:]}"
    assert streaming[-1] <= len(answer) + 16  # what streamed is what was kept
    meta = last_answer(page)
    assert version_in(meta.get_by_test_id("message-model").inner_text(), product.versions[0])
    expect(meta.get_by_test_id("token-count")).to_contain_text(re.compile(r"\d"))

    page.wait_for_url(re.compile(r"/c/[^/]+$"))  # the new chat has its own address
    meta.get_by_test_id("thumbs-up").click()
    expect(meta.get_by_test_id("thumbs-up")).to_have_attribute("aria-pressed", "true")
    # the PWA's service worker: installed, and it never answers the API
    scope = page.evaluate("navigator.serviceWorker.ready.then(r => r.scope)")
    assert scope == f"{product.url}/", scope
    from_worker: list[str] = []
    page.on(
        "response",
        lambda r: r.from_service_worker and "/api/" in r.url and from_worker.append(r.url),
    )
    page.wait_for_load_state("networkidle")
    page.reload()
    expect(messages(page, "user")).to_have_count(1)
    expect(messages(page, "assistant")).to_have_count(1)
    expect(messages(page, "user").get_by_test_id("message-content")).to_have_text(question)
    saved = last_answer(page)
    expect(saved).to_have_attribute("data-status", "complete")
    page.wait_for_load_state("networkidle")  # the Markdown chunk: text as typed until then
    assert words(saved.get_by_test_id("message-content").inner_text()) == words(answer)
    expect(page.get_by_test_id("chat-item")).to_have_count(1)
    # the rating is read back from the server after the reload
    expect(saved.get_by_test_id("thumbs-up")).to_have_attribute("aria-pressed", "true")
    expect(saved.get_by_test_id("thumbs-down")).to_have_attribute("aria-pressed", "false")
    assert page.evaluate("!!navigator.serviceWorker.controller"), "the reload was not controlled"
    assert not from_worker, f"the service worker answered API requests: {from_worker}"
    screenshot(page, "chat")
    assert not page.errors.csp(), page.errors.csp()


XSS = (
    'Look: <img src=x onerror="window.__xss=1"> and <script>window.__xss=2</script> '
    '<svg onload="window.__xss=3"></svg> [click](javascript:window.__xss=4)'
)


def test_an_answer_with_html_renders_as_inert_text(product, page):
    api = product.api
    account = api.user("mallory")
    chat = api.chat(account, title="Inert HTML")
    engine = make_engine(product.settings.database_url, pooled=False)
    try:
        with Session(engine) as session:  # an answer the tiny model cannot be made to say
            seq = session.exec(select(func.max(Message.seq)).where(Message.chat_id == chat["id"]))
            first = (seq.one() or 0) + 1
            session.add(Message(chat_id=chat["id"], seq=first, role="user", content="Show me"))
            session.add(
                Message(
                    chat_id=chat["id"],
                    seq=first + 1,
                    role="assistant",
                    content=XSS,
                    status="complete",
                    model_version=f"{product.settings.model_name}/{product.versions[0]}",
                )
            )
            session.commit()
    finally:
        engine.dispose()

    log_in(page, product, account)
    page.goto(f"{product.url}/c/{chat['id']}")
    body = last_answer(page).get_by_test_id("message-content")
    expect(body).to_contain_text('<img src=x onerror="window.__xss=1">')
    expect(body).to_contain_text("<script>window.__xss=2</script>")
    expect(body.locator("img, script, svg[onload], iframe, object")).to_have_count(0)
    expect(body.locator('a[href^="javascript:"]')).to_have_count(0)
    page.reload()
    expect(body).to_contain_text("<script>")
    time.sleep(0.5)  # an onerror would have fired by now
    assert page.evaluate("window.__xss") is None


def test_a_user_cannot_open_admin_in_the_ui_nor_the_api(product, page):
    account = product.api.register("eve")
    tokens: list[str] = []
    page.on(
        "request",
        lambda r: (
            "/api/v1/" in r.url
            and r.headers.get("authorization")
            and tokens.append(r.headers["authorization"])
        ),
    )
    log_in(page, product, account)
    expect(page.get_by_test_id("sidebar")).to_be_visible()
    expect(page.get_by_test_id("nav-account")).to_be_visible()
    expect(page.get_by_test_id("nav-admin")).to_have_count(0)
    for path in ("/admin", "/admin/models", "/admin/users"):
        page.goto(f"{product.url}{path}")
        expect(page.get_by_test_id("forbidden")).to_contain_text("Admins only")
        expect(page.get_by_test_id("model-row")).to_have_count(0)
        expect(page.get_by_test_id("user-row")).to_have_count(0)
    assert tokens, "the UI sent no authorized request"
    for path in ("/admin/users", "/admin/models"):
        answer = httpx.get(
            f"{product.url}/api/v1{path}", headers={"Authorization": tokens[-1]}, timeout=60
        )
        assert answer.status_code == 403 and answer.json()["code"] == "admin_required", answer.text


def test_the_375_px_layout_never_scrolls_sideways(browser, product, request):
    api = product.api
    page = new_page(browser, request, **MOBILE)
    log_in(page, product, api.register("pat"))
    long_word = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 8
    send(page, f"{long_word} https://example.org/{'very-long-path/' * 16} `{'code' * 40}`")
    expect(messages(page, "user")).to_have_count(1)
    wait_answer(page)
    no_horizontal_scroll(page)
    screenshot(page, "chat-375px")

    # the drawer: focus moves in and stays in, Escape closes it, focus returns to the opener
    opener = page.get_by_test_id("open-sidebar")
    opener.click()
    in_sidebar = "() => !!document.activeElement?.closest('[data-testid=sidebar]')"
    expect(page.get_by_test_id("sidebar")).to_have_attribute("aria-modal", "true")
    assert page.evaluate(in_sidebar), "opening the drawer did not move focus into it"
    page.keyboard.press("Shift+Tab")  # from the first control: wraps to the last, not out
    assert page.evaluate(in_sidebar), "Shift+Tab left the open drawer"
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("sidebar")).not_to_have_attribute("aria-modal", "true")
    expect(opener).to_be_focused()

    admin = new_page(browser, request, **MOBILE)
    log_in(admin, product, api.admin("ops"))
    # /admin/users last: the checks below are about its rows
    for path in ("/admin", "/admin/models", "/admin/conversations", "/admin/knowledge",
                 "/admin/users"):  # fmt: skip
        admin.goto(f"{product.url}{path}")
        expect(admin.get_by_test_id("forbidden")).to_have_count(0)
        no_horizontal_scroll(admin)
        # nor does the page's own scroll box (overflow-y: auto scrolls sideways too)
        sideways = admin.evaluate(
            "(m => m.scrollWidth - m.clientWidth)(document.querySelector('main'))"
        )
        assert sideways <= 0, f"{path}: <main> scrolls {sideways} px sideways at 375 px"
    # on a phone each user is a block: nothing scrolls inside the card, and a user's
    # controls (role, ban, grant credits) are on screen without scrolling
    table = admin.get_by_test_id("users-table-scroll")
    row = admin.get_by_test_id("user-row").first
    expect(row).to_be_visible()
    assert table.evaluate("t => t.scrollWidth <= t.clientWidth")
    for control in ("user-role", "user-ban", "user-grant"):
        box = row.get_by_test_id(control).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375, (control, box)
    screenshot(admin, "admin-users-375px")

    # conversation monitoring: find pat's chat by its text, flag the answer, see it flagged
    admin.goto(f"{product.url}/admin/conversations")
    admin.get_by_test_id("conversation-search").fill("Pneumonoultramicroscopic")
    admin.get_by_test_id("conversation-search").press("Enter")
    row = admin.get_by_test_id("conversation-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("pat@example.org")
    row.get_by_role("link").click()
    answer = admin.get_by_test_id("conversation-message").last
    answer.get_by_test_id("message-flag").click()
    admin.get_by_test_id("flag-reason").fill("check this answer")
    admin.get_by_test_id("flag-submit").click()
    expect(answer.get_by_test_id("message-flagged")).to_be_visible()
    no_horizontal_scroll(admin)
    screenshot(admin, "admin-conversation-375px")
    admin.goto(f"{product.url}/admin/conversations?flagged=open")
    expect(admin.get_by_test_id("open-flags")).to_have_text("1 open")

    # 2FA set-up: the QR code of the otpauth URI is drawn (a data: image the CSP allows)
    page.goto(f"{product.url}/account/security")
    page.get_by_test_id("totp-setup").click()
    qr = page.get_by_test_id("totp-qr")
    expect(qr).to_be_visible()
    assert qr.evaluate("img => img.complete && img.naturalWidth > 0"), "the QR code did not load"
    expect(page.get_by_test_id("totp-secret")).not_to_be_empty()
    screenshot(page, "totp-setup-375px")
    for p in (page, admin):
        assert not p.errors.csp(), p.errors.csp()


def test_usage_charts(product, page):
    api = product.api
    account = api.user("uma")
    grant(api, account, 5000)
    key = new_key(api, account)
    hello = {"model": "champion", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 9}
    completion = httpx.post(
        f"{product.url}/v1/chat/completions",
        json=hello,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    assert completion.status_code == 200, completion.text
    log_in(page, product, account)
    page.get_by_test_id("nav-account").click()
    page.goto(f"{product.url}/account/usage")
    chart = page.get_by_test_id("usage-chart").first
    expect(chart).to_be_visible()
    page.wait_for_load_state("networkidle")
    time.sleep(2)  # the charts' bars grow in for a second and a half
    screenshot(page, "usage")


def test_the_admin_creates_a_plan_and_reads_the_split(product, page):
    log_in(page, product, product.api.admin("planner"))
    page.goto(f"{product.url}/admin/plans")
    page.get_by_test_id("plan-new").click()
    page.get_by_test_id("plan-name").fill("E2E Pro")
    page.get_by_test_id("plan-monthly_credits").fill("2500")
    page.get_by_test_id("plan-daily_token_limit").fill("100000")
    page.get_by_test_id("plan-save").click()
    row = page.get_by_test_id("plan-row").filter(has_text="E2E Pro")
    expect(row).to_contain_text("2,500")
    expect(row).to_contain_text("100,000")
    expect(row).to_contain_text("unlimited")  # the monthly limit left empty
    page.get_by_test_id("plan-new").click()
    page.get_by_test_id("plan-name").fill("E2E Pro")
    page.get_by_test_id("plan-save").click()
    expect(page.get_by_test_id("plan-form")).to_contain_text("exists")  # the API's 409
    page.keyboard.press("Escape")
    screenshot(page, "admin-plans")

    page.goto(f"{product.url}/admin/models")
    expect(page.get_by_test_id("split-variant")).to_have_count(2)
    expect(page.get_by_test_id("split-current")).to_contain_text("to the challenger")
    screenshot(page, "admin-models-split")


@pytest.fixture
def first_is_champion(product):
    product.set_champion(product.versions[0])
    yield
    product.set_champion(product.versions[0])


def test_the_admin_promotes_a_version_and_the_next_reply_uses_it(product, first_is_champion, page):
    first, second = product.versions
    log_in(page, product, product.api.admin("chief"))
    page.get_by_test_id("nav-admin").click()
    page.goto(f"{product.url}/admin/models")
    rows = page.get_by_test_id("model-row")
    expect(rows).to_have_count(2)
    row = {v: rows.and_(page.locator(f'[data-version="{v}"]')) for v in (first, second)}
    expect(row[first].get_by_test_id("champion-badge")).to_be_visible()
    expect(row[second].get_by_test_id("champion-badge")).to_have_count(0)
    screenshot(page, "admin-models")

    row[second].get_by_test_id("promote").click()
    expect(row[second].get_by_test_id("champion-badge")).to_be_visible(timeout=60_000)
    expect(row[first].get_by_test_id("champion-badge")).to_have_count(0)
    expect(page.get_by_test_id("rollback")).to_be_visible()
    screenshot(page, "admin-models-promoted")

    product.wait_champion(second)  # serving follows the alias
    page.goto(f"{product.url}/")
    expect(page.get_by_test_id("composer")).to_be_enabled()
    send(page, "Which model are you?")
    wait_answer(page)
    model = last_answer(page).get_by_test_id("message-model").inner_text()
    assert version_in(model, second) and not version_in(model, first), model


# Records whether the last answer showed its sources while it was still streaming.
RECORD_SOURCES = """() => {
  window.__sourcesWhileStreaming = false;
  new MutationObserver(() => {
    const answers = document.querySelectorAll('[data-testid="message"][data-role="assistant"]');
    const last = answers[answers.length - 1];
    if (last && last.dataset.status === "streaming" && last.querySelector('[data-testid="source"]'))
      window.__sourcesWhileStreaming = true;
  }).observe(document.body, { subtree: true, childList: true, attributes: true });
}"""


def test_a_pdf_attached_to_a_chat_is_cited_and_its_passage_opens(browser, product, request):
    """At 375 px: attach a PDF in the composer, ask about it; the answer streams with a
    numbered source and a click shows the passage. The tiny model writes no sense, so only
    the citation and the passage are checked, not the answer's words."""
    page = new_page(browser, request, **MOBILE)
    account = product.api.user("iris")
    log_in(page, product, account)
    pdf = make_pdf([["Orchard diary"], ["The Gala apples are harvested in the second week of "
                                         "September, when the seeds turn brown."]])  # fmt: skip
    page.get_by_test_id("attach-input").set_input_files(
        files=[{"name": "diary.pdf", "mimeType": "application/pdf", "buffer": pdf}]
    )
    page.wait_for_url(re.compile(r"/c/[^/]+$"))  # a chat made for the file
    chip = page.get_by_test_id("chat-file")
    expect(chip).to_contain_text("diary.pdf")
    expect(chip).to_have_attribute("data-status", "ready", timeout=ANSWER_TIMEOUT)
    chat_id = page.url.rsplit("/", 1)[1]
    short = product.api.http.patch(
        f"/chats/{chat_id}", json={"max_tokens": 24}, headers=account.headers
    )  # a short answer: the test is about its sources
    assert short.status_code == 200, short.text

    page.evaluate(RECORD_SOURCES)
    send(page, "When are the Gala apples harvested?")
    wait_answer(page)
    assert page.evaluate("window.__sourcesWhileStreaming"), "no source while the answer streamed"
    source = last_answer(page).get_by_test_id("source").first
    expect(source).to_contain_text("[1]")
    expect(source).to_contain_text("diary.pdf, p. 2")
    no_horizontal_scroll(page)
    source.click()
    passage = page.get_by_test_id("source-passage")
    expect(passage).to_contain_text("harvested in the second week of September")
    screenshot(page, "knowledge-source-375px")
    page.keyboard.press("Escape")
    expect(passage).to_have_count(0)

    page.reload()  # the citation was saved with the answer
    last_answer(page).get_by_test_id("source").first.click()
    expect(page.get_by_test_id("source-passage")).to_contain_text("second week of September")
    page.goto(f"{product.url}/knowledge")
    expect(page.get_by_test_id("kb-name")).to_be_visible()
    no_horizontal_scroll(page)
    assert not page.errors.csp(), page.errors.csp()
