import { useState } from "react";
import type { Citation } from "../lib/types";
import { Dialog } from "./ui/dialog";

/** The numbered sources of an answer (passages of the user's files it was given); a
 * click opens the passage. */
export function Sources({ citations }: { citations: Citation[] }) {
  const [open, setOpen] = useState<Citation | null>(null);
  if (citations.length === 0) return null;
  return (
    <div className="mt-3 border-t border-border pt-2" data-testid="sources">
      <p className="mb-1 text-xs font-medium text-muted-foreground">Sources</p>
      <ol className="space-y-1">
        {citations.map((c) => (
          <li key={c.n}>
            <button
              type="button"
              data-testid="source"
              className="flex w-full min-w-0 items-baseline gap-2 rounded px-1 py-0.5 text-left text-xs hover:bg-accent focus-visible:outline-2 focus-visible:outline-ring"
              onClick={() => setOpen(c)}
            >
              <span className="font-mono text-primary">[{c.n}]</span>
              <span className="shrink-0 font-medium">
                {c.source}
                {c.page ? `, p. ${c.page}` : ""}
              </span>
              <span className="min-w-0 truncate text-muted-foreground">{c.snippet}</span>
            </button>
          </li>
        ))}
      </ol>
      {open && (
        <Dialog
          open
          onOpenChange={(o) => !o && setOpen(null)}
          title={`[${open.n}] ${open.source}${open.page ? `, page ${open.page}` : ""}`}
          description={open.heading || "The passage the answer was given"}
        >
          <blockquote data-testid="source-passage" className="whitespace-pre-wrap border-l-2 border-primary pl-3 text-sm">
            {open.text}
          </blockquote>
        </Dialog>
      )}
    </div>
  );
}
