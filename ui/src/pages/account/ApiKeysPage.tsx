import { useEffect, useState, type FormEvent } from "react";
import { Copy } from "lucide-react";
import { API_KEY_NAME_MAX } from "../../api/limits";
import { client, describeError, unwrap } from "../../lib/api";
import { copyText } from "../../lib/clipboard";
import { formatDateTime } from "../../lib/dates";
import type { ApiKey, ApiKeyCreated, ApiKeyScope } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Field, Input } from "../../components/ui/input";
import { Badge, Card, ErrorBanner } from "../../components/ui/misc";
import { useSession } from "../../store/session";
import { toast } from "../../store/toasts";

/** What each scope lets a key do (the server's list: platform_api/deps.py API_KEY_SCOPES). */
export const SCOPES: { scope: ApiKeyScope; label: string; what: string; adminOnly?: boolean }[] = [
  { scope: "inference", label: "Inference", what: "the OpenAI-compatible gateway at /v1 (models, chat completions)" },
  { scope: "chats:read", label: "Read chats", what: "chats, messages, folders and share links; search; cost estimates" },
  { scope: "chats:write", label: "Write chats", what: "create, change and delete chats; send messages (spends credits); feedback" },
  { scope: "usage:read", label: "Read usage", what: "the credit balance, ledger and usage" },
  {
    scope: "feedback:export",
    label: "Export feedback",
    what: "the answers' feedback as preference data (the orchard_feedback DAG's key)",
    adminOnly: true,
  },
  {
    scope: "models:review",
    label: "Review models",
    what: "the A/B split's statistics and the loop's split (the orchard_ab_review DAG's key)",
    adminOnly: true,
  },
];

export function ApiKeysPage() {
  const isAdmin = useSession((s) => s.user?.role === "admin");
  const [keys, setKeys] = useState<ApiKey[] | null>(null);
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<ApiKeyScope[]>(["inference"]);
  const [scopesError, setScopesError] = useState<string | null>(null);
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
    if (name.trim().length > API_KEY_NAME_MAX)
      return setNameError(`A name is at most ${API_KEY_NAME_MAX} characters.`);
    setNameError(null);
    if (scopes.length === 0) return setScopesError("Choose at least one scope.");
    setScopesError(null);
    try {
      setCreated(
        await unwrap(client.POST("/api/v1/api-keys", { body: { name: name.trim(), scopes } })),
      );
      setName("");
      setScopes(["inference"]);
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
          <code className="font-mono">OpenAI(base_url=".../v1", api_key="orch_…")</code>). A key does only what its
          scopes allow, and never changes your profile, password, two-factor set-up or keys, nor exports or deletes
          the account: give it no more than its script needs.
        </p>
        <form onSubmit={create} className="space-y-3" noValidate>
          <div className="flex flex-col gap-3 sm:flex-row sm:items-end">
            <Field label="Name" error={nameError} className="flex-1">
              {(p) => <Input {...p} data-testid="api-key-name" value={name} onChange={(e) => setName(e.target.value)} placeholder="laptop script" />}
            </Field>
            <Button type="submit" data-testid="api-key-create">
              Create key
            </Button>
          </div>
          <fieldset className="text-sm" aria-describedby={scopesError ? "api-key-scopes-error" : undefined}>
            <legend className="mb-1 font-medium">Scopes</legend>
            {SCOPES.filter((s) => isAdmin || !s.adminOnly).map(({ scope, label, what }) => (
              <label key={scope} className="flex items-start gap-2 py-0.5">
                <input
                  type="checkbox"
                  className="mt-1"
                  data-testid={`api-key-scope-${scope}`}
                  checked={scopes.includes(scope)}
                  onChange={(e) => setScopes(e.target.checked ? [...scopes, scope] : scopes.filter((s) => s !== scope))}
                />
                <span>
                  <span className="font-medium">{label}</span> <code className="font-mono text-xs text-muted-foreground">{scope}</code>
                  <span className="block text-xs text-muted-foreground">{what}</span>
                </span>
              </label>
            ))}
            {scopesError && (
              <p id="api-key-scopes-error" role="alert" className="text-xs text-destructive">
                {scopesError}
              </p>
            )}
          </fieldset>
        </form>
        {created && (
          <div className="mt-4 space-y-2 rounded-md border border-primary/40 bg-primary/5 p-3" role="status">
            <p className="text-sm font-medium">Copy the key “{created.name}” now: it is shown this once.</p>
            <p className="text-xs text-muted-foreground" data-testid="api-key-created-scopes">
              Scopes: {created.scopes.join(", ")}
            </p>
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
                <span className="flex flex-wrap gap-1" data-testid="api-key-scopes" aria-label="Scopes">
                  {k.scopes.map((s) => (
                    <Badge key={s}>{s}</Badge>
                  ))}
                </span>
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
