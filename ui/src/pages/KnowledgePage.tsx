import { useCallback, useEffect, useRef, useState } from "react";
import { AlertCircle, Check, Loader2, Trash2, Upload } from "lucide-react";
import { client, describeError, unwrap } from "../lib/api";
import { formatBytes } from "../lib/format";
import { ACCEPTED_FILES, indexing, listBases, uploadToBase } from "../lib/knowledge";
import type { KnowledgeBase, KnowledgeFile } from "../lib/types";
import { toast } from "../store/toasts";
import { Button } from "../components/ui/button";
import { Input } from "../components/ui/input";
import { ErrorBanner, Spinner } from "../components/ui/misc";

const POLL_MS = 1000;

/** The user's knowledge bases: create one, upload files (indexed in the background, each
 * with its status), delete files and bases. Chats attach bases from the composer. */
export default function KnowledgePage() {
  const [bases, setBases] = useState<KnowledgeBase[] | null>(null);
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(() => listBases().then(setBases, (e) => setError(describeError(e))), []);
  useEffect(() => void load(), [load]);

  async function create() {
    try {
      await unwrap(client.POST("/api/v1/knowledge", { body: { name: name.trim(), description: "" } }));
      setName("");
      await load();
    } catch (e) {
      setError(describeError(e));
    }
  }

  return (
    <div className="mx-auto max-w-3xl space-y-4 p-4 sm:p-6">
      <h1 className="text-xl font-semibold">Knowledge</h1>
      <p className="text-sm text-muted-foreground">
        Files in a knowledge base are searched by the chats you attach it to, and answers cite them. PDF, DOCX, HTML,
        Markdown, text and images (read by OCR).
      </p>
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      <form
        className="flex flex-col gap-2 sm:flex-row"
        onSubmit={(e) => {
          e.preventDefault();
          if (name.trim()) void create();
        }}
      >
        <label htmlFor="kb-name" className="sr-only">
          New knowledge base
        </label>
        <Input id="kb-name" data-testid="kb-name" placeholder="New knowledge base name" value={name} maxLength={100} onChange={(e) => setName(e.target.value)} />
        <Button type="submit" data-testid="kb-create" disabled={!name.trim()}>
          Create
        </Button>
      </form>
      {bases === null ? (
        <Spinner />
      ) : bases.length === 0 ? (
        <p className="text-sm text-muted-foreground">No knowledge bases yet.</p>
      ) : (
        <ul className="space-y-3">
          {bases.map((b) => (
            <BaseCard key={b.id} base={b} onDeleted={load} />
          ))}
        </ul>
      )}
    </div>
  );
}

function BaseCard({ base, onDeleted }: { base: KnowledgeBase; onDeleted: () => void }) {
  const [files, setFiles] = useState<KnowledgeFile[] | null>(null);
  const [version, setVersion] = useState(0);
  const input = useRef<HTMLInputElement>(null);
  const path = { base_id: base.id };

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        const next = await unwrap(client.GET("/api/v1/knowledge/{base_id}/files", { params: { path: { base_id: base.id } } }));
        if (stopped) return;
        setFiles(next);
        if (next.some(indexing)) timer = setTimeout(load, POLL_MS);
      } catch (e) {
        toast(describeError(e), "error");
      }
    };
    void load();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [base.id, version]);

  async function upload(list: FileList) {
    for (const file of Array.from(list)) {
      try {
        await uploadToBase(base.id, file);
      } catch (e) {
        toast(`${file.name}: ${describeError(e)}`, "error");
      }
    }
    setVersion((v) => v + 1);
  }

  async function removeFile(file: KnowledgeFile) {
    try {
      await unwrap(client.DELETE("/api/v1/knowledge/{base_id}/files/{file_id}", { params: { path: { ...path, file_id: file.id } } }));
      setVersion((v) => v + 1);
    } catch (e) {
      toast(describeError(e), "error");
    }
  }

  async function removeBase() {
    if (!window.confirm(`Delete "${base.name}" and all its files?`)) return;
    try {
      await unwrap(client.DELETE("/api/v1/knowledge/{base_id}", { params: { path } }));
      onDeleted();
    } catch (e) {
      toast(describeError(e), "error");
    }
  }

  return (
    <li className="rounded-lg border border-border p-3" data-testid="kb">
      <div className="flex flex-wrap items-center gap-2">
        <h2 className="min-w-0 flex-1 truncate font-medium">{base.name}</h2>
        <input ref={input} type="file" multiple hidden accept={ACCEPTED_FILES} data-testid="kb-upload-input" onChange={(e) => {
          if (e.target.files) void upload(e.target.files);
          e.target.value = "";
        }} />
        <Button size="sm" variant="outline" onClick={() => input.current?.click()} data-testid="kb-upload">
          <Upload className="size-4" aria-hidden /> Upload
        </Button>
        <Button size="sm" variant="ghost" onClick={removeBase} aria-label={`Delete ${base.name}`} data-testid="kb-delete">
          <Trash2 className="size-4" aria-hidden />
        </Button>
      </div>
      {files === null ? (
        <Spinner />
      ) : files.length === 0 ? (
        <p className="mt-2 text-sm text-muted-foreground">No files yet.</p>
      ) : (
        <ul className="mt-2 divide-y divide-border text-sm">
          {files.map((f) => (
            <li key={f.id} className="flex flex-wrap items-center gap-2 py-1.5" data-testid="kb-file" data-status={f.status}>
              {indexing(f) ? (
                <Loader2 className="size-4 animate-spin" aria-hidden />
              ) : f.status === "failed" ? (
                <AlertCircle className="size-4 text-destructive" aria-hidden />
              ) : (
                <Check className="size-4 text-primary" aria-hidden />
              )}
              <span className="min-w-0 flex-1 truncate">{f.filename}</span>
              <span className="text-xs text-muted-foreground">
                {f.status === "ready" ? `${f.chunks} passage${f.chunks === 1 ? "" : "s"}${f.pages ? ` · ${f.pages} pages` : ""}` : f.status}
                {" · "}
                {formatBytes(f.size_bytes)}
              </span>
              <Button size="sm" variant="ghost" aria-label={`Delete ${f.filename}`} onClick={() => removeFile(f)}>
                <Trash2 className="size-3.5" aria-hidden />
              </Button>
              {f.status === "failed" && <p className="w-full text-xs text-destructive">{f.error}</p>}
            </li>
          ))}
        </ul>
      )}
    </li>
  );
}
