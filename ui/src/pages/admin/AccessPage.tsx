import { useCallback, useEffect, useState, type FormEvent } from "react";
import { FLAG_DESCRIPTION_MAX, ROLES } from "../../api/limits";
import { client, describeError, unwrap } from "../../lib/api";
import { formatDateTime } from "../../lib/dates";
import type { FeatureFlag, Role } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Dialog } from "../../components/ui/dialog";
import { Field, Input, Select } from "../../components/ui/input";
import { Badge, Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { TableHead } from "../../components/ui/table";
import { toast } from "../../store/toasts";

/** routes/admin_access.py's FLAG_KEY. */
export const FLAG_KEY = /^[a-z0-9_.-]{1,64}$/;

/** User ids typed one per line or comma-separated, without blanks and repeats. */
export function parseIds(text: string): string[] {
  return [...new Set(text.split(/[\s,]+/).filter(Boolean))];
}

/** A rule as both cards show it: whom it is for, and what it grants (`target`). */
interface Rule {
  id: number;
  role?: string | null;
  user_id?: string | null;
  target: string;
  created_at: string;
}

type Subject = { role: Role } | { user_id: string };

/** What differs between the model rules and the knowledge rules (routes/admin_access.py
 * serves both with one semantics: no rule, the defaults; a first rule restricts). */
interface RuleKind {
  title: string;
  intro: string;
  what: string; // the target column's heading
  placeholder: string;
  missing: string; // the error when no target is typed
  empty: string;
  prefix: string; // data-testid prefix
  targetTestId: string;
  list: () => Promise<Rule[]>;
  add: (subject: Subject, target: string) => Promise<unknown>;
  remove: (id: number) => Promise<unknown>;
}

const MODEL_RULES: RuleKind = {
  title: "Model access",
  intro:
    "With no rule, a role or user has every served alias (admins every version too). A role's or user's first rule restricts it to what its rules name; deleting them all restores the defaults.",
  what: "Model",
  placeholder: "champion, orchard-chat/3 or *",
  missing: "Name a model: a serve alias, the model name, <name>/<version> or *.",
  empty: "No rules: everyone has the defaults.",
  prefix: "rule",
  targetTestId: "rule-model",
  list: async () => (await unwrap(client.GET("/api/v1/admin/model-access"))).map((r) => ({ ...r, target: r.model })),
  add: (subject, model) => unwrap(client.POST("/api/v1/admin/model-access", { body: { model, ...subject } })),
  remove: (id) => client.DELETE("/api/v1/admin/model-access/{rule_id}", { params: { path: { rule_id: id } } }),
};

const KNOWLEDGE_RULES: RuleKind = {
  title: "Shared knowledge bases",
  intro:
    "Which roles and users may use the knowledge bases pipelines publish (the crawled site) in their chats. With no rule, everyone may use every shared base; a role's or user's first rule restricts it to the bases its rules name (* for all); deleting them all restores the default.",
  what: "Knowledge base",
  placeholder: "crawled-site or *",
  missing: "Name a shared knowledge base by its slug (crawled-site), or * for every one.",
  empty: "No rules: everyone may use every shared knowledge base.",
  prefix: "krule",
  targetTestId: "krule-target",
  list: async () =>
    (await unwrap(client.GET("/api/v1/admin/knowledge-access"))).map((r) => ({ ...r, target: r.knowledge_base })),
  add: (subject, knowledge_base) => unwrap(client.POST("/api/v1/admin/knowledge-access", { body: { knowledge_base, ...subject } })),
  remove: (id) => client.DELETE("/api/v1/admin/knowledge-access/{rule_id}", { params: { path: { rule_id: id } } }),
};

function RulesCard({ kind }: { kind: RuleKind }) {
  const [rules, setRules] = useState<Rule[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [subject, setSubject] = useState<"role" | "user">("role");
  const [role, setRole] = useState<Role>("user");
  const [userId, setUserId] = useState("");
  const [target, setTarget] = useState("");
  const t = kind.prefix;
  const load = useCallback(() => {
    kind
      .list()
      .then(setRules)
      .catch((e) => setError(describeError(e)));
  }, [kind]);
  useEffect(load, [load]);

  async function add(e: FormEvent) {
    e.preventDefault();
    setError(null);
    if (!target.trim()) return setError(kind.missing);
    if (subject === "user" && !userId.trim()) return setError("Give the user's id (Admin → Users shows it).");
    try {
      await kind.add(subject === "role" ? { role } : { user_id: userId.trim() }, target.trim());
      setTarget("");
      load();
    } catch (err) {
      setError(describeError(err));
    }
  }

  async function remove(rule: Rule) {
    setError(null);
    try {
      await kind.remove(rule.id);
      load();
    } catch (err) {
      setError(describeError(err));
    }
  }

  return (
    <Card title={kind.title}>
      <p className="mb-3 text-sm text-muted-foreground">{kind.intro}</p>
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      <form onSubmit={add} noValidate className="my-3 flex flex-wrap items-end gap-2" data-testid={`${t}-form`}>
        <Select aria-label="Rule for" className="w-28" value={subject} data-testid={`${t}-subject`} onChange={(e) => setSubject(e.target.value as "role" | "user")}>
          <option value="role">a role</option>
          <option value="user">a user</option>
        </Select>
        {subject === "role" ? (
          <Select aria-label="Role" className="w-28" value={role} data-testid={`${t}-role`} onChange={(e) => setRole(e.target.value as Role)}>
            {ROLES.map((r) => (
              <option key={r}>{r}</option>
            ))}
          </Select>
        ) : (
          <Input aria-label="User id" placeholder="user id" className="w-56" value={userId} data-testid={`${t}-user`} onChange={(e) => setUserId(e.target.value)} />
        )}
        <Input aria-label={kind.what} placeholder={kind.placeholder} className="w-56" value={target} data-testid={kind.targetTestId} onChange={(e) => setTarget(e.target.value)} />
        <Button type="submit" data-testid={`${t}-add`}>
          Add rule
        </Button>
      </form>
      {!rules ? (
        <Spinner />
      ) : rules.length === 0 ? (
        <p className="text-sm text-muted-foreground" data-testid={`${t}s-empty`}>
          {kind.empty}
        </p>
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full min-w-[32rem] text-sm">
            <TableHead columns={["For", kind.what, "Added", ""]} />
            <tbody>
              {rules.map((r) => (
                <tr key={r.id} data-testid={`${t}-row`} className="border-t border-border">
                  <td className="py-1.5 pr-3">{r.role ? <Badge>role {r.role}</Badge> : <span className="font-mono text-xs">user {r.user_id}</span>}</td>
                  <td className="py-1.5 pr-3 font-mono">{r.target}</td>
                  <td className="py-1.5 pr-3 whitespace-nowrap">{formatDateTime(r.created_at)}</td>
                  <td className="py-1.5 text-right">
                    <Button size="sm" variant="outline" data-testid={`${t}-delete`} aria-label={`Delete the rule ${r.role ?? r.user_id} → ${r.target}`} onClick={() => remove(r)}>
                      Delete
                    </Button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Card>
  );
}

interface FlagDraft {
  key: string;
  description: string;
  enabled: boolean;
  roles: Role[];
  users: string;
}

function FlagDialog({ flag, onClose, onSaved }: { flag: FeatureFlag | "new" | null; onClose: () => void; onSaved: () => void }) {
  const [draft, setDraft] = useState<FlagDraft>({ key: "", description: "", enabled: false, roles: [], users: "" });
  const [errors, setErrors] = useState<{ key?: string; description?: string; form?: string }>({});
  useEffect(() => {
    if (flag === null) return;
    setErrors({});
    setDraft(
      flag === "new"
        ? { key: "", description: "", enabled: false, roles: [], users: "" }
        : { key: flag.key, description: flag.description, enabled: flag.enabled, roles: ROLES.filter((r) => flag.roles.includes(r)), users: flag.users.join("\n") },
    );
  }, [flag]);
  const isNew = flag === "new";

  async function submit(e: FormEvent) {
    e.preventDefault();
    const key = draft.key.trim();
    const errs: typeof errors = {};
    if (!FLAG_KEY.test(key)) errs.key = "Lower-case letters, digits, _, . and -; 1 to 64 characters.";
    if (draft.description.length > FLAG_DESCRIPTION_MAX) errs.description = `At most ${FLAG_DESCRIPTION_MAX} characters.`;
    setErrors(errs);
    if (Object.keys(errs).length) return;
    try {
      await client.PUT("/api/v1/admin/feature-flags/{key}", {
        params: { path: { key } },
        body: { description: draft.description, enabled: draft.enabled, roles: draft.roles, users: parseIds(draft.users) },
      });
      toast(`Feature flag ${key} saved.`, "success");
      onSaved();
      onClose();
    } catch (err) {
      setErrors({ form: describeError(err) });
    }
  }

  return (
    <Dialog open={flag !== null} onOpenChange={(o) => !o && onClose()} title={isNew ? "New feature flag" : `Feature flag ${draft.key}`}>
      <form onSubmit={submit} noValidate className="space-y-3" data-testid="flag-form">
        <ErrorBanner message={errors.form} />
        <Field label="Key" error={errors.key}>
          {(p) => <Input {...p} data-testid="flag-key" readOnly={!isNew} value={draft.key} onChange={(e) => setDraft({ ...draft, key: e.target.value })} />}
        </Field>
        <Field label="Description" error={errors.description}>
          {(p) => <Input {...p} data-testid="flag-description" value={draft.description} onChange={(e) => setDraft({ ...draft, description: e.target.value })} />}
        </Field>
        <label className="flex items-center gap-2 text-sm">
          <input type="checkbox" data-testid="flag-enabled" checked={draft.enabled} onChange={(e) => setDraft({ ...draft, enabled: e.target.checked })} />
          Enabled
        </label>
        <fieldset className="text-sm">
          <legend className="mb-1 font-medium">Only for these roles when enabled (none ticked: everyone)</legend>
          {ROLES.map((r) => (
            <label key={r} className="mr-4 inline-flex items-center gap-1.5">
              <input
                type="checkbox"
                data-testid={`flag-role-${r}`}
                checked={draft.roles.includes(r)}
                onChange={(e) => setDraft({ ...draft, roles: e.target.checked ? [...draft.roles, r] : draft.roles.filter((x) => x !== r) })}
              />
              {r}
            </label>
          ))}
        </fieldset>
        <Field label="Always on for these user ids" hint="One per line or comma-separated; on for them even when disabled.">
          {(p) => (
            <textarea
              {...p}
              rows={3}
              data-testid="flag-users"
              className="w-full rounded-md border border-input bg-background px-3 py-2 font-mono text-xs"
              value={draft.users}
              onChange={(e) => setDraft({ ...draft, users: e.target.value })}
            />
          )}
        </Field>
        <div className="flex justify-end gap-2">
          <Button variant="outline" onClick={onClose}>
            Cancel
          </Button>
          <Button type="submit" data-testid="flag-save">
            Save
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

function FlagsCard() {
  const [flags, setFlags] = useState<FeatureFlag[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [editing, setEditing] = useState<FeatureFlag | "new" | null>(null);
  const load = useCallback(() => {
    unwrap(client.GET("/api/v1/admin/feature-flags"))
      .then(setFlags)
      .catch((e) => setError(describeError(e)));
  }, []);
  useEffect(load, [load]);

  async function reset(flag: FeatureFlag) {
    setError(null);
    try {
      await client.DELETE("/api/v1/admin/feature-flags/{key}", { params: { path: { key: flag.key } } });
      toast(`Feature flag ${flag.key} deleted.`, "success");
      load();
    } catch (err) {
      setError(describeError(err));
    }
  }

  return (
    <Card
      title="Feature flags"
      actions={
        <Button data-testid="flag-new" onClick={() => setEditing("new")}>
          New flag
        </Button>
      }
    >
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      {!flags ? (
        <Spinner />
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full min-w-[36rem] text-sm">
            <TableHead columns={["Flag", "State", "Roles", "Users", ""]} />
            <tbody>
              {flags.map((f) => (
                <tr key={f.key} data-testid="flag-row" data-flag={f.key} className="border-t border-border align-top">
                  <td className="py-1.5 pr-3">
                    <span className="font-mono font-medium">{f.key}</span>
                    {f.description && <div className="text-xs text-muted-foreground">{f.description}</div>}
                  </td>
                  <td className="py-1.5 pr-3">
                    <Badge data-testid="flag-state" className={f.enabled ? "border-primary text-primary" : undefined}>
                      {f.enabled ? "on" : "off"}
                    </Badge>
                    {!f.stored && <div className="text-xs text-muted-foreground">built-in default</div>}
                  </td>
                  <td className="py-1.5 pr-3">{f.roles.length ? f.roles.join(", ") : "everyone"}</td>
                  <td className="py-1.5 pr-3">{f.users.length || "—"}</td>
                  <td className="py-1.5">
                    <div className="flex justify-end gap-2">
                      <Button size="sm" variant="outline" data-testid="flag-edit" onClick={() => setEditing(f)}>
                        Edit
                      </Button>
                      {f.stored && (
                        <Button size="sm" variant="destructive" data-testid="flag-delete" title="Back to the built-in default" onClick={() => reset(f)}>
                          Delete
                        </Button>
                      )}
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <FlagDialog flag={editing} onClose={() => setEditing(null)} onSaved={load} />
    </Card>
  );
}

export default function AccessPage() {
  return (
    <div className="space-y-4">
      <RulesCard kind={MODEL_RULES} />
      <RulesCard kind={KNOWLEDGE_RULES} />
      <FlagsCard />
    </div>
  );
}
