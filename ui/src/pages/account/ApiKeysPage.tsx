import { useEffect, useState, type FormEvent } from "react";
import { Copy } from "lucide-react";
import { client, describeError, unwrap } from "../../lib/api";
import { copyText } from "../../lib/clipboard";
import { formatDateTime } from "../../lib/dates";
import type { ApiKey, ApiKeyCreated } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Field, Input } from "../../components/ui/input";
import { Badge, Card, ErrorBanner } from "../../components/ui/misc";
import { toast } from "../../store/toasts";

export function ApiKeysPage() {
  const [keys, setKeys] = useState<ApiKey[] | null>(null);
  const [name, setName] = useState("");
  const [created, setCreated] = useState<ApiKeyCreated | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [nameError, setNameError] = useState<string | null>(null);

  const refresh = () =>
    unwrap(client.GET("/api/v1/api-keys"))
      .then(setKeys)
      .catch((e) => setError(describeError(e)));
  useEffect(() => {
    void refresh();
  }, []);

  async function create(e: FormEvent) {
    e.preventDefault();
    if (!name.trim()) return setNameError("Give the key a name.");
    if (name.trim().length > 100) return setNameError("A name is at most 100 characters.");
    setNameError(null);
    try {
      setCreated(await unwrap(client.POST("/api/v1/api-keys", { body: { name: name.trim() } })));
      setName("");
      void refresh();
    } catch (err) {
      setError(describeError(err));
    }
  }

  async function act(call: () => Promise<{ data?: ApiKeyCreated }>) {
    setError(null);
    try {
      const { data: result } = await call();
      if (result && "key" in result) setCreated(result);
      void refresh();
    } catch (err) {
      setError(describeError(err));
    }
  }

  return (
    <div className="space-y-4">
      <ErrorBanner message={error} />
      <Card title="Create an API key">
        <p className="mb-3 text-sm text-muted-foreground">
          Keys call the OpenAI-compatible gateway at <code className="font-mono">/v1</code> (for example{" "}
          <code className="font-mono">OpenAI(base_url=".../v1", api_key="orch_…")</code>).
        </p>
        <form onSubmit={create} className="flex flex-col gap-3 sm:flex-row sm:items-end" noValidate>
          <Field label="Name" error={nameError} className="flex-1">
            {(p) => <Input {...p} data-testid="api-key-name" value={name} onChange={(e) => setName(e.target.value)} placeholder="laptop script" />}
          </Field>
          <Button type="submit" data-testid="api-key-create">
            Create key
          </Button>
        </form>
        {created && (
          <div className="mt-4 space-y-2 rounded-md border border-primary/40 bg-primary/5 p-3" role="status">
            <p className="text-sm font-medium">Copy the key “{created.name}” now: it is shown this once.</p>
            <div className="flex gap-2">
              <Input readOnly value={created.key} data-testid="api-key-secret" className="font-mono" onFocus={(e) => e.target.select()} aria-label="New API key" />
              <Button variant="outline" aria-label="Copy key" onClick={() => copyText(created.key).then((ok) => ok && toast("Key copied.", "success"))}>
                <Copy className="size-4" aria-hidden />
              </Button>
            </div>
            <Button size="sm" variant="ghost" onClick={() => setCreated(null)}>
              Done
            </Button>
          </div>
        )}
      </Card>
      <Card title="Your keys">
        {!keys ? null : keys.length === 0 ? (
          <p className="text-sm text-muted-foreground">No keys yet.</p>
        ) : (
          <ul className="divide-y divide-border">
            {keys.map((k) => (
              <li key={k.id} className="flex flex-wrap items-center gap-2 py-2 text-sm" data-testid="api-key-row">
                <span className="font-medium">{k.name}</span>
                <code className="font-mono text-muted-foreground">{k.prefix}…</code>
                {k.revoked_at && <Badge className="text-destructive">revoked</Badge>}
                <span className="text-xs text-muted-foreground">
                  created {formatDateTime(k.created_at)} · {k.last_used_at ? `last used ${formatDateTime(k.last_used_at)}` : "never used"}
                </span>
                {!k.revoked_at && (
                  <span className="ml-auto flex gap-2">
                    <Button size="sm" variant="outline" onClick={() => act(() => client.POST("/api/v1/api-keys/{key_id}/rotate", { params: { path: { key_id: k.id } } }))}>
                      Rotate
                    </Button>
                    <Button size="sm" variant="destructive" data-testid="api-key-revoke" onClick={() => act(() => client.DELETE("/api/v1/api-keys/{key_id}", { params: { path: { key_id: k.id } } }))}>
                      Revoke
                    </Button>
                  </span>
                )}
              </li>
            ))}
          </ul>
        )}
      </Card>
    </div>
  );
}
