import { useEffect, useState, type FormEvent } from "react";
import { Copy } from "lucide-react";
import { TITLE_MAX } from "../api/limits";
import { client, describeError, unwrap } from "../lib/api";
import { copyText } from "../lib/clipboard";
import { formatDateTime } from "../lib/dates";
import type { Chat, ShareLink, ShareLinkCreated } from "../lib/types";
import { useChats } from "../store/chats";
import { toast } from "../store/toasts";
import { Button } from "./ui/button";
import { Dialog } from "./ui/dialog";
import { Field, Input, Select } from "./ui/input";
import { ErrorBanner } from "./ui/misc";

export function NameDialog({
  open,
  onOpenChange,
  title,
  label,
  initial,
  onSave,
  max = TITLE_MAX,
}: {
  open: boolean;
  onOpenChange: (open: boolean) => void;
  title: string;
  label: string;
  initial: string;
  onSave: (name: string) => Promise<void>;
  max?: number;
}) {
  const [name, setName] = useState(initial);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    if (open) {
      setName(initial);
      setError(null);
    }
  }, [open, initial]);
  async function submit(e: FormEvent) {
    e.preventDefault();
    const value = name.trim();
    if (!value) return setError(`${label} cannot be empty.`);
    if (value.length > max) return setError(`${label} is at most ${max} characters.`);
    setBusy(true);
    try {
      await onSave(value);
      onOpenChange(false);
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
    }
  }
  return (
    <Dialog open={open} onOpenChange={onOpenChange} title={title}>
      <form onSubmit={submit} className="space-y-4" noValidate>
        <Field label={label} error={error}>
          {(p) => <Input {...p} autoFocus value={name} onChange={(e) => setName(e.target.value)} data-testid="name-input" />}
        </Field>
        <div className="flex justify-end gap-2">
          <Button variant="outline" onClick={() => onOpenChange(false)}>
            Cancel
          </Button>
          <Button type="submit" disabled={busy} data-testid="name-save">
            Save
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

export function MoveDialog({ chat, open, onOpenChange }: { chat: Chat; open: boolean; onOpenChange: (o: boolean) => void }) {
  const folders = useChats((s) => s.folders);
  const update = useChats((s) => s.update);
  const [folder, setFolder] = useState(chat.folder_id ?? "");
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (open) setFolder(chat.folder_id ?? "");
  }, [open, chat.folder_id]);
  async function submit(e: FormEvent) {
    e.preventDefault();
    try {
      // `folder_id: null` leaves the folder
      await update(chat.id, { folder_id: folder || null });
      onOpenChange(false);
    } catch (err) {
      setError(describeError(err));
    }
  }
  return (
    <Dialog open={open} onOpenChange={onOpenChange} title="Move to folder">
      <form onSubmit={submit} className="space-y-4">
        <Field label="Folder" error={error}>
          {(p) => (
            <Select {...p} value={folder} onChange={(e) => setFolder(e.target.value)}>
              <option value="">No folder</option>
              {folders.map((f) => (
                <option key={f.id} value={f.id}>
                  {f.name}
                </option>
              ))}
            </Select>
          )}
        </Field>
        {folders.length === 0 && <p className="text-sm text-muted-foreground">No folders yet: create one in the sidebar.</p>}
        <div className="flex justify-end gap-2">
          <Button variant="outline" onClick={() => onOpenChange(false)}>
            Cancel
          </Button>
          <Button type="submit">Move</Button>
        </div>
      </form>
    </Dialog>
  );
}

export function ShareDialog({ chat, open, onOpenChange }: { chat: Chat; open: boolean; onOpenChange: (o: boolean) => void }) {
  const [created, setCreated] = useState<ShareLinkCreated | null>(null);
  const [links, setLinks] = useState<ShareLink[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const refresh = () =>
    unwrap(client.GET("/api/v1/chats/{chat_id}/shares", { params: { path: { chat_id: chat.id } } }))
      .then(setLinks)
      .catch((e) => setError(describeError(e)));

  useEffect(() => {
    if (open) {
      setCreated(null);
      setError(null);
      void refresh();
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [open, chat.id]);

  const url = created ? `${window.location.origin}/shared/${created.token}` : "";
  return (
    <Dialog
      open={open}
      onOpenChange={onOpenChange}
      title="Share a read-only link"
      description="Anyone with the link sees the title and messages, nothing about you. The link is shown once."
    >
      <div className="space-y-4">
        <ErrorBanner message={error} />
        {created ? (
          <div className="space-y-2">
            <label className="block text-sm font-medium" htmlFor="share-url">
              Link
            </label>
            <div className="flex gap-2">
              <Input id="share-url" readOnly value={url} data-testid="share-url" onFocus={(e) => e.target.select()} />
              <Button
                variant="outline"
                aria-label="Copy link"
                onClick={async () => {
                  if (await copyText(url)) toast("Link copied.", "success");
                }}
              >
                <Copy className="size-4" aria-hidden />
              </Button>
            </div>
          </div>
        ) : (
          <Button
            data-testid="share-create"
            disabled={busy}
            onClick={async () => {
              setBusy(true);
              setError(null);
              try {
                setCreated(
                  await unwrap(client.POST("/api/v1/chats/{chat_id}/shares", { params: { path: { chat_id: chat.id } } })),
                );
                void refresh();
              } catch (e) {
                setError(describeError(e));
              } finally {
                setBusy(false);
              }
            }}
          >
            Create link
          </Button>
        )}
        {links.filter((l) => !l.revoked_at).length > 0 && (
          <div>
            <h3 className="mb-2 text-sm font-medium">Active links</h3>
            <ul className="space-y-1 text-sm">
              {links
                .filter((l) => !l.revoked_at)
                .map((l) => (
                  <li key={l.id} className="flex items-center justify-between gap-2">
                    <span className="text-muted-foreground">Created {formatDateTime(l.created_at)}</span>
                    <Button
                      size="sm"
                      variant="outline"
                      onClick={async () => {
                        try {
                          await client.DELETE("/api/v1/chats/{chat_id}/shares/{share_id}", {
                            params: { path: { chat_id: chat.id, share_id: l.id } },
                          });
                          void refresh();
                        } catch (e) {
                          setError(describeError(e));
                        }
                      }}
                    >
                      Revoke
                    </Button>
                  </li>
                ))}
            </ul>
          </div>
        )}
      </div>
    </Dialog>
  );
}
