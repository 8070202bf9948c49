import { useEffect, useState } from "react";
import { client, describeError, unwrap } from "../../lib/api";
import type { KnowledgeFlag } from "../../lib/types";
import { ErrorBanner, Spinner } from "../../components/ui/misc";

/** Uploaded passages that read like instructions to the model (prompt injection through a
 * document), flagged at ingestion. They stay data: retrieval quotes them as sources and
 * never puts them in a system prompt. */
export default function KnowledgeFlagsPage() {
  const [flags, setFlags] = useState<KnowledgeFlag[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    unwrap(client.GET("/api/v1/admin/knowledge/flags")).then(setFlags, (e) => setError(describeError(e)));
  }, []);
  return (
    <section className="space-y-3">
      <p className="text-sm text-muted-foreground">
        Passages of uploaded files that read like instructions to the model. They are shown to the model only as quoted
        data, never as instructions.
      </p>
      <ErrorBanner message={error} />
      {flags === null && !error ? (
        <Spinner />
      ) : flags?.length === 0 ? (
        <p className="text-sm text-muted-foreground">No flagged passages.</p>
      ) : (
        <ul className="space-y-2" data-testid="knowledge-flags">
          {flags?.map((f) => (
            <li key={f.id} className="rounded-lg border border-border p-3 text-sm" data-testid="knowledge-flag">
              <div className="flex flex-wrap gap-x-3 gap-y-1 text-xs text-muted-foreground">
                <span className="font-medium text-foreground">{f.filename}</span>
                {f.page ? <span>page {f.page}</span> : null}
                <span>{f.user_email}</span>
                <span className="font-mono">{f.rule}</span>
                <time dateTime={f.created_at}>{new Date(f.created_at).toLocaleString()}</time>
              </div>
              <blockquote className="mt-2 border-l-2 border-destructive pl-2 break-words">{f.excerpt}</blockquote>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
