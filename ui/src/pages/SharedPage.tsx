import { useEffect, useState } from "react";
import { Link, useParams } from "react-router";
import { describeError, publicClient, unwrap } from "../lib/api";
import type { SharedChat } from "../lib/types";
import { LazyMarkdown as Markdown } from "../components/LazyMarkdown";
import { ErrorBanner, Spinner } from "../components/ui/misc";
import { cn } from "../lib/cn";

export default function SharedPage() {
  const { token = "" } = useParams();
  const [chat, setChat] = useState<SharedChat | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    unwrap(publicClient.GET("/api/v1/shared/{token}", { params: { path: { token } } }))
      .then(setChat)
      .catch((e) => setError(describeError(e)));
  }, [token]);
  return (
    <main className="mx-auto min-h-dvh max-w-3xl px-3 py-6 sm:px-4">
      <header className="mb-6 flex items-center gap-2">
        <img src="/icons/icon.svg" alt="" className="size-6" />
        <Link to="/" className="font-semibold">
          Orchard
        </Link>
        <span className="ml-auto text-xs text-muted-foreground">Shared chat, read-only</span>
      </header>
      {error && <ErrorBanner message={error} />}
      {!chat && !error && <Spinner />}
      {chat && (
        <>
          <h1 className="mb-4 text-xl font-semibold" data-testid="shared-title">
            {chat.title}
          </h1>
          <div className="flex flex-col gap-4">
            {chat.messages.map((m, i) => (
              <article
                key={i}
                data-testid="message"
                data-role={m.role}
                data-status={m.status}
                className={cn("flex", m.role === "user" ? "justify-end" : "justify-start")}
              >
                <div className={cn("min-w-0 rounded-2xl px-4 py-3", m.role === "user" ? "max-w-[85%] bg-primary/10" : "w-full")}>
                  <div data-testid="message-content">
                    <Markdown text={m.content} />
                  </div>
                  {m.status !== "complete" && <p className="mt-1 text-xs text-muted-foreground">{m.status}</p>}
                </div>
              </article>
            ))}
          </div>
        </>
      )}
    </main>
  );
}
