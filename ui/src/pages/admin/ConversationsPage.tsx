import { useCallback, useEffect, useMemo, useState, type FormEvent } from "react";
import { Link, Route, Routes, useLocation, useParams, useSearchParams } from "react-router";
import { ArrowLeft, Flag } from "lucide-react";
import { client, describeError, saveDownload, unwrap } from "../../lib/api";
import { cn } from "../../lib/cn";
import { exportQuery, FLAG_TABS, listQuery, openFlagsByTarget, PAGE, type FlagFilter } from "../../lib/conversations";
import { formatDateTime } from "../../lib/dates";
import type { ChatFlag, ConversationDetail, ConversationSummary, Message } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Dialog } from "../../components/ui/dialog";
import { Field, Input, Select, Textarea } from "../../components/ui/input";
import { Badge, Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { TableHead } from "../../components/ui/table";
import { toast } from "../../store/toasts";

const REASON_MAX = 2000;

/** /admin/conversations: every user's chats (search, flag filters, export) and one chat
 * with its flags. Each read is in the audit log on the server's side. */
export default function ConversationsPage() {
  return (
    <Routes>
      <Route index element={<ConversationList />} />
      <Route path=":chatId" element={<ConversationView />} />
    </Routes>
  );
}

function useFilters() {
  const [params, setParams] = useSearchParams();
  const flagged = (FLAG_TABS.find(([f]) => f === params.get("flagged"))?.[0] ?? "all") as FlagFilter;
  const filters = { q: params.get("q") ?? "", flagged, offset: Math.max(0, Number(params.get("offset")) || 0) };
  const update = (next: Partial<typeof filters>) => {
    const merged = { ...filters, offset: 0, ...next };
    const p = new URLSearchParams();
    if (merged.q) p.set("q", merged.q);
    if (merged.flagged !== "all") p.set("flagged", merged.flagged);
    if (merged.offset) p.set("offset", String(merged.offset));
    setParams(p, { replace: true });
  };
  return [filters, update] as const;
}

export function ConversationList() {
  const [filters, update] = useFilters();
  const [text, setText] = useState(filters.q);
  const [rows, setRows] = useState<ConversationSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [format, setFormat] = useState<"jsonl" | "json">("jsonl");
  const [exporting, setExporting] = useState(false);
  const { search } = useLocation(); // kept on the way to a chat and back
  const query = listQuery(filters);
  const queryKey = JSON.stringify(query);

  useEffect(() => {
    let live = true;
    setRows(null);
    setError(null);
    unwrap(client.GET("/api/v1/admin/conversations", { params: { query } }))
      .then((r) => live && setRows(r))
      .catch((e) => live && setError(describeError(e)));
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [queryKey]);

  async function exportNow() {
    setExporting(true);
    try {
      await saveDownload(
        client.GET("/api/v1/admin/conversations/export", { params: { query: exportQuery(filters, format) }, parseAs: "blob" }),
        `orchard-conversations.${format}`,
      );
    } catch (e) {
      setError(`Export failed: ${describeError(e)}`);
    } finally {
      setExporting(false);
    }
  }

  return (
    <Card
      title="Conversations"
      actions={
        <form
          className="flex w-full gap-2 sm:w-auto"
          role="search"
          onSubmit={(e) => {
            e.preventDefault();
            update({ q: text.trim() });
          }}
        >
          <Input
            type="search"
            aria-label="Search conversations"
            placeholder="Text in a title or a message"
            maxLength={200}
            className="w-full sm:w-64"
            data-testid="conversation-search"
            value={text}
            onChange={(e) => setText(e.target.value)}
          />
          <Button type="submit" variant="outline">
            Search
          </Button>
        </form>
      }
    >
      <div className="mb-3 flex flex-wrap items-center justify-between gap-2">
        <div role="tablist" aria-label="Flagged" className="flex flex-wrap gap-1">
          {FLAG_TABS.map(([value, label]) => (
            <button
              key={value}
              type="button"
              role="tab"
              aria-selected={filters.flagged === value}
              data-testid={`flag-tab-${value}`}
              onClick={() => update({ flagged: value })}
              className={cn(
                "rounded-md px-2.5 py-1 text-sm",
                filters.flagged === value ? "bg-primary text-primary-foreground" : "text-muted-foreground hover:bg-accent",
              )}
            >
              {label}
            </button>
          ))}
        </div>
        <div className="flex items-center gap-2">
          <Select aria-label="Export format" className="w-24" value={format} onChange={(e) => setFormat(e.target.value as "jsonl" | "json")}>
            <option value="jsonl">JSONL</option>
            <option value="json">JSON</option>
          </Select>
          <Button
            variant="outline"
            data-testid="conversation-export"
            disabled={exporting}
            onClick={exportNow}
            title={filters.flagged === "resolved" ? "The export of flagged chats includes those with open flags" : undefined}
          >
            {exporting ? "Exporting…" : "Export"}
          </Button>
        </div>
      </div>
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      {!rows ? (
        !error && <Spinner />
      ) : rows.length === 0 ? (
        <p className="text-sm text-muted-foreground" data-testid="conversations-empty">
          {filters.q ? `No conversation matches “${filters.q}”.` : "No conversations."}
        </p>
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full min-w-[40rem] text-sm">
            <TableHead columns={["Conversation", "User", "Model", { label: "Messages", right: true }, "Updated", "Flags"]} />
            <tbody>
              {rows.map((c) => (
                <tr key={c.id} data-testid="conversation-row" data-chat-id={c.id} className="border-t border-border align-top">
                  <td className="py-2 pr-3">
                    <Link
                      to={{ pathname: c.id, search }}
                      relative="path"
                      className="font-medium text-primary hover:underline"
                    >
                      {c.title || "Untitled"}
                    </Link>
                    {c.snippet && (
                      <div className="mt-0.5 line-clamp-2 text-xs text-muted-foreground" data-testid="conversation-snippet">
                        {c.snippet}
                      </div>
                    )}
                  </td>
                  <td className="py-2 pr-3 break-all">{c.user.email}</td>
                  <td className="py-2 pr-3 font-mono text-xs">{c.model_alias}</td>
                  <td className="py-2 pr-3 text-right tabular-nums">{c.message_count}</td>
                  <td className="py-2 pr-3 whitespace-nowrap">{formatDateTime(c.updated_at)}</td>
                  <td className="py-2">
                    {c.open_flags > 0 && (
                      <Badge className="text-destructive" data-testid="open-flags">
                        {c.open_flags} open
                      </Badge>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div className="mt-3 flex justify-between">
        <Button variant="outline" size="sm" disabled={filters.offset === 0} onClick={() => update({ ...filters, offset: Math.max(0, filters.offset - PAGE) })}>
          Newer
        </Button>
        <Button variant="outline" size="sm" disabled={!rows || rows.length < PAGE} onClick={() => update({ ...filters, offset: filters.offset + PAGE })}>
          Older
        </Button>
      </div>
    </Card>
  );
}

/** What a new flag points at: the whole chat, or one message. */
type FlagTarget = { message: Message | null } | null;

function FlagDialog({ target, onClose, onFlag }: { target: FlagTarget; onClose: () => void; onFlag: (reason: string) => Promise<void> }) {
  const [reason, setReason] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    setReason("");
    setError(null);
  }, [target]);
  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!reason.trim()) return setError("Say why it needs review.");
    setBusy(true);
    try {
      await onFlag(reason.trim());
      onClose();
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
    }
  }
  const what = target?.message ? `message #${target.message.seq} (${target.message.role})` : "the whole conversation";
  return (
    <Dialog open={target !== null} onOpenChange={(o) => !o && onClose()} title="Flag for review" description={`Flag ${what}.`}>
      <form onSubmit={submit} className="space-y-3" noValidate>
        <Field label="Reason" error={error}>
          {(p) => (
            <Textarea {...p} rows={3} maxLength={REASON_MAX} data-testid="flag-reason" value={reason} onChange={(e) => setReason(e.target.value)} />
          )}
        </Field>
        <div className="flex justify-end gap-2">
          <Button variant="outline" onClick={onClose}>
            Cancel
          </Button>
          <Button type="submit" data-testid="flag-submit" disabled={busy}>
            Flag
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

export function ConversationView() {
  const { chatId = "" } = useParams();
  const [detail, setDetail] = useState<ConversationDetail | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [target, setTarget] = useState<FlagTarget>(null);
  const { search } = useLocation();

  const load = useCallback(() => {
    setError(null);
    unwrap(client.GET("/api/v1/admin/conversations/{chat_id}", { params: { path: { chat_id: chatId } } }))
      .then(setDetail)
      .catch((e) => setError(describeError(e)));
  }, [chatId]);
  useEffect(load, [load]);

  const open = useMemo(() => openFlagsByTarget(detail?.flags ?? []), [detail]);

  async function flag(reason: string) {
    const created = await unwrap(
      client.POST("/api/v1/admin/conversations/{chat_id}/flags", {
        params: { path: { chat_id: chatId } },
        body: { reason, ...(target?.message ? { message_id: target.message.id } : {}) },
      }),
    );
    setDetail((d) => d && { ...d, flags: [created, ...d.flags] });
    toast("Flagged for review.", "success");
  }

  async function resolve(flags: ChatFlag[]) {
    setError(null);
    try {
      const done = await Promise.all(
        flags.map((f) =>
          unwrap(client.POST("/api/v1/admin/conversation-flags/{flag_id}/resolve", { params: { path: { flag_id: f.id } } })),
        ),
      );
      const byId = new Map(done.map((f) => [f.id, f]));
      setDetail((d) => d && { ...d, flags: d.flags.map((f) => byId.get(f.id) ?? f) });
    } catch (e) {
      setError(describeError(e));
    }
  }

  const back = (
    <Link to={{ pathname: "..", search }} relative="path" className="inline-flex items-center gap-1 text-sm text-primary hover:underline">
      <ArrowLeft className="size-4" aria-hidden /> All conversations
    </Link>
  );
  if (!detail)
    return (
      <div className="space-y-3">
        {back}
        {error ? <ErrorBanner message={error} /> : <Spinner />}
      </div>
    );

  const chatFlags = open.get("") ?? [];
  return (
    <div className="space-y-4">
      {back}
      <Card
        title={<span data-testid="conversation-title">{detail.chat.title || "Untitled"}</span>}
        actions={
          <div className="flex gap-2">
            {chatFlags.length > 0 && (
              <Button size="sm" variant="outline" data-testid="chat-unflag" onClick={() => resolve(chatFlags)}>
                Resolve chat flag{chatFlags.length > 1 ? "s" : ""}
              </Button>
            )}
            <Button size="sm" variant="outline" data-testid="chat-flag" onClick={() => setTarget({ message: null })}>
              <Flag className="size-4" aria-hidden /> Flag conversation
            </Button>
          </div>
        }
      >
        <ErrorBanner message={error} onDismiss={() => setError(null)} />
        <p className="text-sm text-muted-foreground">
          {detail.user.email} · <span className="font-mono">{detail.chat.model_alias}</span> · updated {formatDateTime(detail.chat.updated_at)}
        </p>
        <FlagList flags={detail.flags} messages={detail.messages} onResolve={(f) => resolve([f])} />
      </Card>
      <Card title="Messages">
        <ol className="space-y-3">
          {detail.messages.map((m) => {
            const flags = open.get(m.id) ?? [];
            return (
              <li
                key={m.id}
                data-testid="conversation-message"
                data-message-id={m.id}
                data-superseded={m.superseded_at ? "true" : undefined}
                className={cn(
                  "rounded-md border p-3",
                  flags.length ? "border-destructive/50" : "border-border",
                  m.superseded_at && "opacity-60",
                )}
              >
                <div className="mb-1 flex flex-wrap items-center gap-2 text-xs text-muted-foreground">
                  <span className="font-medium text-foreground">#{m.seq} {m.role === "user" ? "User" : "Assistant"}</span>
                  <span>{formatDateTime(m.created_at)}</span>
                  {m.status !== "complete" && <Badge>{m.status}</Badge>}
                  {m.superseded_at && <Badge data-testid="superseded">superseded</Badge>}
                  {flags.length > 0 && (
                    <Badge className="text-destructive" data-testid="message-flagged">
                      flagged
                    </Badge>
                  )}
                  <span className="ml-auto flex gap-1">
                    {flags.length > 0 ? (
                      <Button size="sm" variant="ghost" data-testid="message-unflag" onClick={() => resolve(flags)}>
                        Unflag
                      </Button>
                    ) : (
                      <Button size="sm" variant="ghost" data-testid="message-flag" onClick={() => setTarget({ message: m })}>
                        <Flag className="size-3.5" aria-hidden /> Flag
                      </Button>
                    )}
                  </span>
                </div>
                {/* plain text: what users and models wrote is shown, never rendered */}
                <div className="text-sm break-words whitespace-pre-wrap">{m.content}</div>
                {m.error && <p className="mt-1 text-xs text-destructive">{m.error}</p>}
              </li>
            );
          })}
        </ol>
        {detail.messages.length === 0 && <p className="text-sm text-muted-foreground">No messages.</p>}
      </Card>
      <FlagDialog target={target} onClose={() => setTarget(null)} onFlag={flag} />
    </div>
  );
}

function FlagList({ flags, messages, onResolve }: { flags: ChatFlag[]; messages: Message[]; onResolve: (flag: ChatFlag) => void }) {
  if (!flags.length) return <p className="mt-3 text-sm text-muted-foreground">No flags.</p>;
  const seq = new Map(messages.map((m) => [m.id, m.seq]));
  return (
    <ul className="mt-3 space-y-2" aria-label="Flags">
      {flags.map((f) => (
        <li key={f.id} data-testid="flag" data-flag-id={f.id} className="flex flex-wrap items-start gap-2 rounded-md bg-muted/50 px-3 py-2 text-sm">
          <div className="min-w-0 flex-1">
            <div className="break-words">{f.reason}</div>
            <div className="text-xs text-muted-foreground">
              {f.message_id ? `message #${seq.get(f.message_id) ?? "?"}` : "whole conversation"} · {f.flagged_by?.email ?? "a deleted account"},{" "}
              {formatDateTime(f.created_at)}
              {f.resolved_at && ` · resolved by ${f.resolved_by?.email ?? "a deleted account"}, ${formatDateTime(f.resolved_at)}`}
            </div>
          </div>
          {f.resolved_at ? (
            <Badge data-testid="flag-resolved">resolved</Badge>
          ) : (
            <Button size="sm" variant="outline" data-testid="flag-resolve" onClick={() => onResolve(f)}>
              Resolve
            </Button>
          )}
        </li>
      ))}
    </ul>
  );
}
