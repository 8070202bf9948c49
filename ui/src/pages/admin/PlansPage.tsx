import { useCallback, useEffect, useState, type FormEvent } from "react";
import { ApiError, client, describeError, unwrap } from "../../lib/api";
import { formatTokens } from "../../lib/billing";
import { emptyPlan, planDraft, validatePlan, type PlanDraft, type PlanErrors } from "../../lib/plans";
import type { Plan } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Dialog } from "../../components/ui/dialog";
import { Field, Input } from "../../components/ui/input";
import { Badge, Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { TableHead } from "../../components/ui/table";
import { toast } from "../../store/toasts";

/** Create (plan null) or edit a plan; the server's 409 on a taken name shows on the name. */
function PlanDialog({ open, plan, onClose, onSaved }: { open: boolean; plan: Plan | null; onClose: () => void; onSaved: () => void }) {
  const [draft, setDraft] = useState<PlanDraft>(emptyPlan);
  const [errors, setErrors] = useState<PlanErrors & { form?: string }>({});
  const [saving, setSaving] = useState(false);
  useEffect(() => {
    if (open) {
      setDraft(plan ? planDraft(plan) : emptyPlan);
      setErrors({});
    }
  }, [open, plan]);
  const set = (field: keyof PlanDraft, value: string | boolean) => {
    setDraft((d) => ({ ...d, [field]: value }));
    setErrors((e) => ({ ...e, [field]: undefined }));
  };

  async function submit(e: FormEvent) {
    e.preventDefault();
    const result = validatePlan(draft);
    if (!result.ok) {
      setErrors(result.errors);
      return;
    }
    setSaving(true);
    try {
      const body = result.body;
      await (plan
        ? client.PATCH("/api/v1/admin/plans/{plan_id}", { params: { path: { plan_id: plan.id } }, body })
        : client.POST("/api/v1/admin/plans", { body }));
      toast(`Plan ${result.body.name} saved.`, "success");
      onSaved();
      onClose();
    } catch (err) {
      const message = describeError(err);
      if (err instanceof ApiError && err.code === "plan_name_taken") setErrors({ name: message });
      else setErrors({ form: message });
    } finally {
      setSaving(false);
    }
  }

  const text = (field: keyof PlanDraft, label: string, hint?: string) => (
    <Field label={label} error={errors[field]} hint={hint}>
      {(p) => (
        <Input
          {...p}
          data-testid={`plan-${field}`}
          inputMode={field === "name" || field === "description" ? undefined : "numeric"}
          value={draft[field] as string}
          onChange={(e) => set(field, e.target.value)}
        />
      )}
    </Field>
  );
  return (
    <Dialog open={open} onOpenChange={(o) => !o && onClose()} title={plan ? `Edit plan ${plan.name}` : "New plan"}>
      <form onSubmit={submit} noValidate className="space-y-3" data-testid="plan-form">
        <ErrorBanner message={errors.form} />
        {text("name", "Name")}
        {text("description", "Description")}
        {text("monthly_credits", "Monthly credits", "Granted once per calendar month (UTC).")}
        {text("daily_token_limit", "Daily token limit", "Empty: unlimited.")}
        {text("monthly_token_limit", "Monthly token limit", "Empty: unlimited.")}
        <label className="flex items-center gap-2 text-sm">
          <input type="checkbox" data-testid="plan-is_default" checked={draft.is_default} onChange={(e) => set("is_default", e.target.checked)} />
          Default plan (users without a plan get it)
        </label>
        <div className="flex justify-end gap-2">
          <Button variant="outline" onClick={onClose}>
            Cancel
          </Button>
          <Button type="submit" disabled={saving} data-testid="plan-save">
            {saving ? "Saving…" : "Save"}
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

export default function PlansPage() {
  const [plans, setPlans] = useState<Plan[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [editing, setEditing] = useState<{ plan: Plan | null } | null>(null);
  const [deleting, setDeleting] = useState<Plan | null>(null);

  const load = useCallback(() => {
    unwrap(client.GET("/api/v1/admin/plans"))
      .then(setPlans)
      .catch((e) => setError(describeError(e)));
  }, []);
  useEffect(load, [load]);

  async function act(fn: () => Promise<unknown>, done: string) {
    setError(null);
    try {
      await fn();
      toast(done, "success");
      load();
    } catch (e) {
      setError(describeError(e));
    }
  }

  return (
    <Card
      title="Plans"
      actions={
        <Button data-testid="plan-new" onClick={() => setEditing({ plan: null })}>
          New plan
        </Button>
      }
    >
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      {!plans ? (
        <Spinner />
      ) : plans.length === 0 ? (
        <p className="text-sm text-muted-foreground">No plans yet: users get no monthly credits and no token limits.</p>
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full min-w-[40rem] text-sm">
            <TableHead columns={["Plan", { label: "Monthly credits", right: true }, { label: "Daily tokens", right: true }, { label: "Monthly tokens", right: true }, ""]} />
            <tbody>
              {plans.map((p) => (
                <tr key={p.id} data-testid="plan-row" data-plan-id={p.id} className="border-t border-border align-top">
                  <td className="py-2 pr-3">
                    <span className="font-medium">{p.name}</span>
                    {p.is_default && <Badge data-testid="plan-default" className="ml-2 border-primary text-primary">default</Badge>}
                    {p.description && <div className="text-xs text-muted-foreground">{p.description}</div>}
                  </td>
                  <td className="py-2 pr-3 text-right font-mono">{p.monthly_credits.toLocaleString("en-US")}</td>
                  <td className="py-2 pr-3 text-right font-mono">{formatTokens(p.daily_token_limit)}</td>
                  <td className="py-2 pr-3 text-right font-mono">{formatTokens(p.monthly_token_limit)}</td>
                  <td className="py-2">
                    <div className="flex justify-end gap-2">
                      {!p.is_default && (
                        <Button size="sm" variant="outline" data-testid="plan-make-default"
                          onClick={() => act(() => client.PATCH("/api/v1/admin/plans/{plan_id}", { params: { path: { plan_id: p.id } }, body: { is_default: true } }), `${p.name} is the default plan.`)}>
                          Make default
                        </Button>
                      )}
                      <Button size="sm" variant="outline" data-testid="plan-edit" onClick={() => setEditing({ plan: p })}>
                        Edit
                      </Button>
                      <Button size="sm" variant="destructive" data-testid="plan-delete" onClick={() => setDeleting(p)}>
                        Delete
                      </Button>
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <PlanDialog open={editing !== null} plan={editing?.plan ?? null} onClose={() => setEditing(null)} onSaved={load} />
      <Dialog open={deleting !== null} onOpenChange={(o) => !o && setDeleting(null)} title={`Delete plan ${deleting?.name ?? ""}?`}
        description="Its users move to the default plan.">
        <div className="flex justify-end gap-2">
          <Button variant="outline" onClick={() => setDeleting(null)}>
            Cancel
          </Button>
          <Button variant="destructive" data-testid="plan-delete-confirm"
            onClick={() => {
              const p = deleting;
              setDeleting(null);
              if (p) void act(() => client.DELETE("/api/v1/admin/plans/{plan_id}", { params: { path: { plan_id: p.id } } }), `Plan ${p.name} deleted.`);
            }}>
            Delete
          </Button>
        </div>
      </Dialog>
    </Card>
  );
}
