import { useEffect, useState, type FormEvent } from "react";
import { MEMORY_MAX } from "../api/limits";
import { client, describeError, unwrap } from "../lib/api";
import { formatDateTime } from "../lib/dates";
import type { MemoryItem } from "../lib/types";
import { Button } from "./ui/button";
import { Field, Input } from "./ui/input";
import { Badge, ErrorBanner } from "./ui/misc";
import { AccountSwitch } from "./AccountSwitch";
import { useSession } from "../store/session";

const SOURCES: Record<MemoryItem["source"], string> = {
  rules: "from a chat",
  model: "from a chat",
  user: "added by you",
};

function check(text: string): string | null {
  if (!text.trim()) return "Write what the assistant should remember.";
  if (text.trim().length > MEMORY_MAX) return `A memory is at most ${MEMORY_MAX} characters.`;
  return null;
}

/** Memory on or off for the whole account: off, nothing is remembered from chats and
 * nothing recalled into them; the list below stays. */
function MemorySwitch() {
  const user = useSession((s) => s.user);
  const setUser = useSession((s) => s.setUser);
  if (!user) return null;
  return (
    <div>
      <AccountSwitch
        testId="memory-switch"
        on={user.memory_enabled ?? true}
        label="Memory"
        description="Off: nothing you say is remembered, and no memory is given to the assistant. Your memories stay below until you delete them."
        save={async (next) =>
          setUser(await unwrap(client.PUT("/api/v1/users/me/memory", { body: { memory_enabled: next } })))
        }
      />
    </div>
  );
}

/** The signed-in user's long-term memories (settings page): list, add, edit, switch off, delete. */
export function MemoryPanel() {
  const [items, setItems] = useState<MemoryItem[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [text, setText] = useState("");
  const [textError, setTextError] = useState<string | null>(null);
  const [editing, setEditing] = useState<{ id: string; text: string; error: string | null } | null>(null);

  const refresh = () =>
    unwrap(client.GET("/api/v1/memories"))
      .then(setItems)
      .catch((e) => setError(describeError(e)));
  useEffect(() => {
    void refresh();
  }, []);

  async function run(call: () => Promise<unknown>) {
    setError(null);
    try {
      await call();
      await refresh();
      return true;
    } catch (err) {
      setError(describeError(err));
      return false;
    }
  }

  async function add(e: FormEvent) {
    e.preventDefault();
    const problem = check(text);
    setTextError(problem);
    if (problem) return;
    if (await run(() => unwrap(client.POST("/api/v1/memories", { body: { content: text.trim() } })))) setText("");
  }

  async function saveEdit(e: FormEvent) {
    e.preventDefault();
    if (!editing) return;
    const problem = check(editing.text);
    if (problem) return setEditing({ ...editing, error: problem });
    const body = { content: editing.text.trim() };
    const path = { memory_id: editing.id };
    if (await run(() => unwrap(client.PATCH("/api/v1/memories/{memory_id}", { params: { path }, body })))) setEditing(null);
  }

  const setEnabled = (m: MemoryItem, enabled: boolean) =>
    run(() => unwrap(client.PATCH("/api/v1/memories/{memory_id}", { params: { path: { memory_id: m.id } }, body: { enabled } })));
  const remove = (m: MemoryItem) =>
    run(() => client.DELETE("/api/v1/memories/{memory_id}", { params: { path: { memory_id: m.id } } }));
  const forgetAll = () => {
    if (window.confirm("Delete every memory? Later chats will no longer know any of them.")) {
      void run(() => client.DELETE("/api/v1/memories"));
    }
  };

  return (
    <div className="space-y-4" data-testid="memory-panel">
      <MemorySwitch />
      <p className="text-sm text-muted-foreground">
        Facts you state about yourself in a chat (“I prefer short answers”, “my project uses Python 3.11”) are
        remembered after the answer, and the ones that fit a later question are given to the assistant. Only you see
        them. Switch one off to keep it without it being used.
      </p>
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      <form onSubmit={add} className="flex flex-col gap-2 sm:flex-row sm:items-end" noValidate>
        <Field label="Add a memory" error={textError} className="min-w-0 flex-1">
          {(p) => (
            <Input {...p} data-testid="memory-new" value={text} maxLength={MEMORY_MAX} onChange={(e) => setText(e.target.value)} placeholder="I work at a bakery in Lyon." />
          )}
        </Field>
        <Button type="submit" data-testid="memory-add">
          Remember
        </Button>
      </form>
      {!items ? null : items.length === 0 ? (
        <p className="text-sm text-muted-foreground" data-testid="memory-empty">
          Nothing remembered yet.
        </p>
      ) : (
        <ul className="divide-y divide-border">
          {items.map((m) => (
            <li key={m.id} className="space-y-1 py-2 text-sm" data-testid="memory-row">
              {editing?.id === m.id ? (
                <form onSubmit={saveEdit} className="flex flex-col gap-2 sm:flex-row sm:items-end" noValidate>
                  <Field label="Memory" error={editing.error} className="min-w-0 flex-1">
                    {(p) => (
                      <Input {...p} data-testid="memory-edit" value={editing.text} maxLength={MEMORY_MAX} onChange={(e) => setEditing({ ...editing, text: e.target.value })} />
                    )}
                  </Field>
                  <div className="flex gap-2">
                    <Button type="submit" size="sm" data-testid="memory-save">
                      Save
                    </Button>
                    <Button size="sm" variant="ghost" onClick={() => setEditing(null)}>
                      Cancel
                    </Button>
                  </div>
                </form>
              ) : (
                <p className={m.enabled ? "break-words" : "break-words text-muted-foreground line-through"} data-testid="memory-content">
                  {m.content}
                </p>
              )}
              <div className="flex flex-wrap items-center gap-2">
                <Badge>{SOURCES[m.source]}</Badge>
                <span className="text-xs text-muted-foreground">{formatDateTime(m.created_at)}</span>
                <label className="flex items-center gap-1 text-xs">
                  <input type="checkbox" data-testid="memory-enabled" checked={m.enabled} onChange={(e) => void setEnabled(m, e.target.checked)} />
                  Use in chats
                </label>
                <span className="ml-auto flex gap-2">
                  <Button size="sm" variant="outline" data-testid="memory-edit-open" onClick={() => setEditing({ id: m.id, text: m.content, error: null })}>
                    Edit
                  </Button>
                  <Button size="sm" variant="outline" className="text-destructive" data-testid="memory-delete" aria-label={`Delete memory: ${m.content}`} onClick={() => void remove(m)}>
                    Delete
                  </Button>
                </span>
              </div>
            </li>
          ))}
        </ul>
      )}
      {items && items.length > 0 && (
        <Button variant="destructive" size="sm" data-testid="memory-forget-all" onClick={forgetAll}>
          Forget everything
        </Button>
      )}
    </div>
  );
}

