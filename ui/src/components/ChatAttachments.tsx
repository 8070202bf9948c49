import { useEffect, useRef, useState, type DragEvent, type ReactNode } from "react";
import { AlertCircle, Check, Library, Loader2, Paperclip, X } from "lucide-react";
import { describeError } from "../lib/api";
import { cn } from "../lib/cn";
import {
  ACCEPTED_FILES,
  attachBases,
  chatKnowledge,
  deleteChatFile,
  indexing,
  listBases,
  uploadToChat,
} from "../lib/knowledge";
import type { ChatKnowledge, KnowledgeBase } from "../lib/types";
import { toast } from "../store/toasts";
import { Button } from "./ui/button";
import { Dialog } from "./ui/dialog";

const POLL_MS = 1000;
const chip =
  "inline-flex max-w-full items-center gap-1 rounded-full border border-border bg-muted px-2 py-0.5 text-xs";

/** The composer's knowledge: an attach button and drag-and-drop for files (uploaded into
 * the chat, indexed in the background: each shows its status), and a picker of the user's
 * knowledge bases. Without a chat yet, `createChat` makes one, the files go into it, and
 * then `openChat` goes there (whose page then shows them). */
export function ChatAttachments({
  chatId,
  createChat,
  openChat,
  children,
}: {
  chatId: string | null;
  createChat: () => Promise<string | null>;
  openChat: (id: string) => void;
  children: ReactNode;
}) {
  const [state, setState] = useState<ChatKnowledge | null>(null);
  const [dragging, setDragging] = useState(false);
  const [picking, setPicking] = useState(false);
  const [version, setVersion] = useState(0); // a new upload: poll its status
  const input = useRef<HTMLInputElement>(null);

  useEffect(() => {
    if (!chatId) {
      setState(null);
      return;
    }
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        const next = await chatKnowledge(chatId);
        if (stopped) return;
        setState(next);
        if (next.files.some(indexing)) timer = setTimeout(load, POLL_MS);
      } catch {
        /* the chat page shows a missing chat */
      }
    };
    void load();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [chatId, version]);

  async function upload(files: FileList | File[]) {
    const list = Array.from(files);
    if (list.length === 0) return;
    const id = chatId ?? (await createChat());
    if (!id) return;
    for (const file of list) {
      try {
        const saved = await uploadToChat(id, file);
        setState((s) => (s ? { ...s, files: [...s.files, saved] } : { knowledge_bases: [], files: [saved] }));
      } catch (e) {
        toast(`${file.name}: ${describeError(e)}`, "error");
      }
    }
    if (id === chatId) setVersion((v) => v + 1);
    else openChat(id);
  }

  async function remove(fileId: string) {
    if (!chatId) return;
    try {
      await deleteChatFile(chatId, fileId);
      setState((s) => (s ? { ...s, files: s.files.filter((f) => f.id !== fileId) } : s));
    } catch (e) {
      toast(describeError(e), "error");
    }
  }

  function onDrop(e: DragEvent) {
    e.preventDefault();
    setDragging(false);
    if (e.dataTransfer.files.length) void upload(e.dataTransfer.files);
  }

  const files = state?.files ?? [];
  const bases = state?.knowledge_bases ?? [];
  return (
    <div
      data-testid="composer-dropzone"
      onDragOver={(e) => {
        if (Array.from(e.dataTransfer.types).includes("Files")) {
          e.preventDefault();
          setDragging(true);
        }
      }}
      onDragLeave={() => setDragging(false)}
      onDrop={onDrop}
      className={cn("space-y-1 rounded-xl", dragging && "outline-2 outline-dashed outline-primary")}
    >
      {(files.length > 0 || bases.length > 0) && (
        <ul className="flex flex-wrap gap-1" aria-label="Chat knowledge" data-testid="chat-files">
          {files.map((f) => (
            <li key={f.id} className={cn(chip, f.status === "failed" && "border-destructive text-destructive")} data-testid="chat-file" data-status={f.status} title={f.error || f.status}>
              {indexing(f) ? (
                <Loader2 className="size-3 animate-spin" aria-label={f.status} />
              ) : f.status === "failed" ? (
                <AlertCircle className="size-3" aria-label="failed" />
              ) : (
                <Check className="size-3" aria-label="ready" />
              )}
              <span className="truncate">{f.filename}</span>
              <button type="button" aria-label={`Remove ${f.filename}`} className="rounded hover:bg-accent" onClick={() => remove(f.id)}>
                <X className="size-3" aria-hidden />
              </button>
            </li>
          ))}
          {bases.map((b) => (
            <li key={b.id} className={chip} data-testid="chat-base">
              <Library className="size-3" aria-hidden />
              <span className="truncate">{b.name}</span>
            </li>
          ))}
        </ul>
      )}
      <div className="flex items-end gap-1">
        <input
          ref={input}
          type="file"
          multiple
          hidden
          accept={ACCEPTED_FILES}
          data-testid="attach-input"
          onChange={(e) => {
            if (e.target.files) void upload(e.target.files);
            e.target.value = "";
          }}
        />
        <div className="flex flex-col gap-1 pb-2">
          <Button variant="ghost" size="icon" aria-label="Attach files" data-testid="attach" onClick={() => input.current?.click()}>
            <Paperclip className="size-4" aria-hidden />
          </Button>
          <Button variant="ghost" size="icon" aria-label="Knowledge bases" data-testid="attach-knowledge" onClick={() => setPicking(true)}>
            <Library className="size-4" aria-hidden />
          </Button>
        </div>
        <div className="min-w-0 flex-1">{children}</div>
      </div>
      {picking && (
        <BasePicker
          attached={bases.map((b) => b.id)}
          onClose={() => setPicking(false)}
          onSave={async (ids) => {
            const id = chatId ?? (await createChat());
            if (!id) return;
            setState(await attachBases(id, ids));
            setPicking(false);
            if (id !== chatId) openChat(id);
          }}
        />
      )}
    </div>
  );
}

function BasePicker({
  attached,
  onClose,
  onSave,
}: {
  attached: string[];
  onClose: () => void;
  onSave: (ids: string[]) => Promise<void>;
}) {
  const [bases, setBases] = useState<KnowledgeBase[] | null>(null);
  const [chosen, setChosen] = useState(new Set(attached));
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    listBases().then(setBases, (e) => setError(describeError(e)));
  }, []);
  return (
    <Dialog open onOpenChange={(o) => !o && onClose()} title="Knowledge bases" description="Answers in this chat search and cite the bases you pick.">
      {error && <p className="text-sm text-destructive">{error}</p>}
      {bases && bases.length === 0 && (
        <p className="text-sm text-muted-foreground">
          You have no knowledge bases yet: create one on the <a className="underline" href="/knowledge">Knowledge</a> page.
        </p>
      )}
      <ul className="space-y-1">
        {bases?.map((b) => (
          <li key={b.id}>
            <label className="flex items-center gap-2 text-sm">
              <input
                type="checkbox"
                checked={chosen.has(b.id)}
                onChange={(e) => {
                  const next = new Set(chosen);
                  if (e.target.checked) next.add(b.id);
                  else next.delete(b.id);
                  setChosen(next);
                }}
              />
              {b.name}
            </label>
          </li>
        ))}
      </ul>
      <div className="mt-4 flex justify-end">
        <Button
          onClick={() => onSave([...chosen]).catch((e) => setError(describeError(e)))}
          data-testid="attach-knowledge-save"
        >
          Use in this chat
        </Button>
      </div>
    </Dialog>
  );
}
