import { useEffect, useLayoutEffect, useRef, useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { SlidersHorizontal } from "lucide-react";
import { client, describeError, unwrap } from "../lib/api";
import { chatTitleFrom } from "../lib/format";
import { pickSettings } from "../lib/settings";
import { initialConversation } from "../lib/stream";
import type { Chat } from "../lib/types";
import { ChatAttachments } from "../components/ChatAttachments";
import { Composer } from "../components/Composer";
import { MessageView } from "../components/MessageView";
import { SettingsForm } from "../components/SettingsForm";
import { Button } from "../components/ui/button";
import { Dialog } from "../components/ui/dialog";
import { ErrorBanner, Spinner } from "../components/ui/misc";
import { useAccess } from "../store/access";
import { useChats } from "../store/chats";
import { NEW_CHAT, useConversation } from "../store/conversation";
import { useDefaults } from "../store/defaults";
import { useSession } from "../store/session";

export default function ChatPage() {
  const { chatId } = useParams();
  const key = chatId ?? NEW_CHAT;
  const navigate = useNavigate();
  const conv = useConversation((s) => s.byChat[key] ?? initialConversation);
  const draft = useConversation((s) => s.drafts[key] ?? "");
  const loading = useConversation((s) => s.loading[key] ?? false);
  const { setDraft, moveDraft, dispatch, loadMessages, send, stop } = useConversation.getState();
  const chatFromList = useChats((s) => (chatId ? s.chats.find((c) => c.id === chatId) : undefined));
  const [chat, setChat] = useState<Chat | null>(null);
  const [notFound, setNotFound] = useState<string | null>(null);
  const [settingsOpen, setSettingsOpen] = useState(false);
  const defaults = useDefaults((s) => s.defaults);
  const credits = useSession((s) => s.credits);
  const scroller = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const current = chatFromList ?? (chat?.id === chatId ? chat : null);

  useEffect(() => {
    setNotFound(null);
    if (!chatId) return;
    if ((useConversation.getState().byChat[chatId]?.phase ?? "idle") === "idle") void loadMessages(chatId);
    if (!useChats.getState().chats.some((c) => c.id === chatId)) {
      unwrap(client.GET("/api/v1/chats/{chat_id}", { params: { path: { chat_id: chatId } } }))
        .then(setChat)
        .catch((e) => setNotFound(describeError(e)));
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [chatId]);

  // follow the answer while the reader is at the bottom
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [conv.messages]);

  /** A chat for the first file or knowledge base attached before any message. */
  async function createChat(): Promise<string | null> {
    try {
      const created = await useChats.getState().create(newChatSettings(), chatTitleFrom(draft));
      return created.id;
    } catch (e) {
      dispatch(NEW_CHAT, { type: "error", error: describeError(e) });
      return null;
    }
  }

  function newChatSettings() {
    const allowed = useAccess.getState().models;
    return allowed?.default && !allowed.aliases.includes(defaults.model_alias) ? { ...defaults, model_alias: allowed.default } : defaults;
  }

  async function onSend() {
    const text = draft;
    if (!text.trim()) return;
    if (chatId) {
      await send(chatId, text);
      return;
    }
    dispatch(NEW_CHAT, { type: "send" });
    let created: Chat;
    try {
      created = await useChats.getState().create(newChatSettings(), chatTitleFrom(text));
    } catch (e) {
      dispatch(NEW_CHAT, { type: "error", error: describeError(e) });
      return;
    }
    dispatch(NEW_CHAT, { type: "error", error: "" }); // back to idle, no message
    moveDraft(NEW_CHAT, created.id);
    navigate(`/c/${created.id}`);
    stick.current = true;
    await send(created.id, text);
  }

  if (notFound)
    return (
      <div className="mx-auto max-w-xl p-6">
        <ErrorBanner message={notFound} />
        <p className="mt-4">
          <Link className="text-primary underline" to="/">
            Start a new chat
          </Link>
        </p>
      </div>
    );

  const messages = conv.messages;
  const lastAssistant = [...messages].reverse().find((m) => m.role === "assistant");
  const busy = conv.phase !== "idle";
  const alias = current?.model_alias ?? defaults.model_alias;

  return (
    <div className="flex h-full flex-col">
      <div className="flex items-center gap-2 border-b border-border px-4 py-2">
        <h1 className="min-w-0 flex-1 truncate text-sm font-semibold" data-testid="chat-title">
          {chatId ? (current?.title ?? "…") : "New chat"}
        </h1>
        <span className="hidden text-xs text-muted-foreground sm:inline">
          {alias} · temperature {current?.temperature ?? defaults.temperature}
        </span>
        {chatId && current ? (
          <Button variant="ghost" size="sm" onClick={() => setSettingsOpen(true)} data-testid="chat-settings">
            <SlidersHorizontal className="size-4" aria-hidden /> <span className="hidden sm:inline">Chat settings</span>
          </Button>
        ) : (
          <Link to="/settings" className="rounded px-2 py-1 text-sm text-muted-foreground hover:bg-accent">
            Defaults
          </Link>
        )}
      </div>
      <div
        ref={scroller}
        className="min-h-0 flex-1 overflow-y-auto"
        onScroll={(e) => {
          const el = e.currentTarget;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
        }}
      >
        <div className="mx-auto flex w-full max-w-3xl flex-col gap-4 px-3 py-4 sm:px-4" aria-live="off">
          {loading && messages.length === 0 && <Spinner label="Loading messages" />}
          {!chatId && messages.length === 0 && (
            <div className="py-16 text-center">
              <h2 className="text-2xl font-semibold">What can I help with?</h2>
              <p className="mt-2 text-sm text-muted-foreground">
                Answers come from <span className="font-mono">{defaults.model_alias}</span>; change the defaults in{" "}
                <Link to="/settings" className="underline">
                  Settings
                </Link>
                .
              </p>
            </div>
          )}
          {messages.map((m) => (
            <MessageView
              key={m.id}
              chatId={key}
              message={m}
              modelAlias={alias}
              liveTokens={m.id === conv.streamingId ? conv.liveTokens : null}
              canRegenerate={m.id === lastAssistant?.id}
              canEdit
              busy={busy}
            />
          ))}
        </div>
      </div>
      <div className="mx-auto w-full max-w-3xl space-y-2 px-3 pb-3 sm:px-4">
        <ErrorBanner message={conv.error} onDismiss={() => dispatch(key, { type: "dismiss" })} />
        <ChatAttachments
          chatId={chatId ?? null}
          createChat={createChat}
          openChat={(id) => {
            moveDraft(NEW_CHAT, id);
            navigate(`/c/${id}`);
          }}
        >
          <Composer
            value={draft}
            onChange={(v) => setDraft(key, v)}
            onSend={onSend}
            onStop={() => (chatId ? stop(chatId) : undefined)}
            phase={conv.phase}
            chatId={chatId ?? null}
          />
        </ChatAttachments>
        <p className="text-center text-xs text-muted-foreground">
          {conv.phase === "streaming" ? (
            <span data-testid="live-tokens">{conv.liveTokens} tokens so far</span>
          ) : (
            <>
              Credits left: <span className="font-mono">{credits ?? "…"}</span>
            </>
          )}
        </p>
      </div>
      {current && (
        <Dialog open={settingsOpen} onOpenChange={setSettingsOpen} title="Chat settings" description="Overrides for this chat only.">
          <SettingsForm
            initial={pickSettings(current)}
            submitLabel="Save for this chat"
            onSubmit={async (patch) => {
              if (Object.keys(patch).length === 0) return;
              const updated = await useChats.getState().update(current.id, patch);
              setChat(updated);
            }}
          />
        </Dialog>
      )}
    </div>
  );
}
