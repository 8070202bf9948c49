import { useEffect, useMemo, useState, type FormEvent } from "react";
import { CREDIT_GRANT_MAX, ROLES, USER_STATUSES } from "../../api/limits";
import { client, describeError, unwrap } from "../../lib/api";
import { formatDateTime } from "../../lib/dates";
import { formatTokens, limitText, parseLimit } from "../../lib/billing";
import type { Plan, Role, User, UserStatus } from "../../lib/types";
import { Button } from "../../components/ui/button";
import { Dialog } from "../../components/ui/dialog";
import { Field, Input, Select } from "../../components/ui/input";
import { Badge, Card, ErrorBanner, Spinner } from "../../components/ui/misc";
import { useSession } from "../../store/session";
import { toast } from "../../store/toasts";

function GrantDialog({ user, onClose }: { user: User | null; onClose: () => void }) {
  const [amount, setAmount] = useState("100");
  const [reason, setReason] = useState("");
  const [errors, setErrors] = useState<{ amount?: string; reason?: string; form?: string }>({});
  async function submit(e: FormEvent) {
    e.preventDefault();
    const n = Number(amount);
    const errs: typeof errors = {};
    if (!/^\d+$/.test(amount.trim()) || n < 1 || n > CREDIT_GRANT_MAX)
      errs.amount = `A whole number from 1 to ${CREDIT_GRANT_MAX.toLocaleString("en-US")}.`;
    if (!reason.trim()) errs.reason = "Say why (it goes in the ledger and the audit log).";
    setErrors(errs);
    if (Object.keys(errs).length || !user) return;
    try {
      await client.POST("/api/v1/admin/users/{user_id}/credits", {
        params: { path: { user_id: user.id } },
        body: { amount: n, reason: reason.trim() },
      });
      toast(`Granted ${n} credits to ${user.email}.`, "success");
      setReason("");
      onClose();
    } catch (err) {
      setErrors({ form: describeError(err) });
    }
  }
  return (
    <Dialog open={user !== null} onOpenChange={(o) => !o && onClose()} title="Grant credits" description={user?.email}>
      <form onSubmit={submit} className="space-y-3" noValidate>
        <ErrorBanner message={errors.form} />
        <Field label="Amount" error={errors.amount}>
          {(p) => <Input {...p} inputMode="numeric" data-testid="grant-amount" value={amount} onChange={(e) => setAmount(e.target.value)} />}
        </Field>
        <Field label="Reason" error={errors.reason}>
          {(p) => <Input {...p} data-testid="grant-reason" value={reason} maxLength={200} onChange={(e) => setReason(e.target.value)} />}
        </Field>
        <div className="flex justify-end gap-2">
          <Button variant="outline" onClick={onClose}>
            Cancel
          </Button>
          <Button type="submit" data-testid="grant-submit">
            Grant
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

/** The user's own token limits: empty is the plan's (null), a number overrides it. */
function LimitsDialog({ user, onClose, onSaved }: { user: User | null; onClose: () => void; onSaved: (u: User) => void }) {
  const [daily, setDaily] = useState("");
  const [monthly, setMonthly] = useState("");
  const [errors, setErrors] = useState<{ daily?: string; monthly?: string; form?: string }>({});
  useEffect(() => {
    if (!user) return;
    setDaily(limitText(user.daily_token_limit));
    setMonthly(limitText(user.monthly_token_limit));
    setErrors({});
  }, [user]);
  async function submit(e: FormEvent) {
    e.preventDefault();
    const d = parseLimit(daily);
    const m = parseLimit(monthly);
    const errs: typeof errors = {};
    if (!d.ok) errs.daily = d.error;
    if (!m.ok) errs.monthly = m.error;
    setErrors(errs);
    if (!d.ok || !m.ok || !user) return;
    try {
      const updated = await unwrap(
        client.PATCH("/api/v1/admin/users/{user_id}", {
          params: { path: { user_id: user.id } },
          body: { daily_token_limit: d.value, monthly_token_limit: m.value },
        }),
      );
      toast(`Token limits of ${user.email} saved.`, "success");
      onSaved(updated);
      onClose();
    } catch (err) {
      setErrors({ form: describeError(err) });
    }
  }
  return (
    <Dialog open={user !== null} onOpenChange={(o) => !o && onClose()} title="Token limits" description={user?.email}>
      <form onSubmit={submit} className="space-y-3" noValidate data-testid="limits-form">
        <ErrorBanner message={errors.form} />
        <Field label="Daily token limit" error={errors.daily} hint="Empty: the plan's limit.">
          {(p) => <Input {...p} inputMode="numeric" data-testid="limit-daily-input" value={daily} onChange={(e) => setDaily(e.target.value)} />}
        </Field>
        <Field label="Monthly token limit" error={errors.monthly} hint="Empty: the plan's limit.">
          {(p) => <Input {...p} inputMode="numeric" data-testid="limit-monthly-input" value={monthly} onChange={(e) => setMonthly(e.target.value)} />}
        </Field>
        <div className="flex justify-end gap-2">
          <Button variant="outline" onClick={onClose}>
            Cancel
          </Button>
          <Button type="submit" data-testid="limits-submit">
            Save limits
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

export const SEARCH_DEBOUNCE_MS = 300;

/** The list's query: the search (`q`), role and status filters, the API's maximum page. */
function usersQuery(q: string, role: Role | "", status: UserStatus | "") {
  return { limit: 500, q: q.trim() || undefined, role: role || undefined, status: status || undefined };
}

export function UsersPage() {
  const me = useSession((s) => s.user);
  const [users, setUsers] = useState<User[] | null>(null);
  const [plans, setPlans] = useState<Plan[]>([]);
  const [q, setQ] = useState("");
  const [role, setRole] = useState<Role | "">("");
  const [status, setStatus] = useState<UserStatus | "">("");
  const [error, setError] = useState<string | null>(null);
  const [granting, setGranting] = useState<User | null>(null);
  const [limiting, setLimiting] = useState<User | null>(null);

  // the server searches (e-mail or name, any case); typing waits for a pause
  useEffect(() => {
    const controller = new AbortController();
    const timer = setTimeout(
      () => {
        unwrap(client.GET("/api/v1/admin/users", { params: { query: usersQuery(q, role, status) }, signal: controller.signal }))
          .then((list) => {
            setUsers(list);
            setError(null);
          })
          .catch((e) => {
            if (!controller.signal.aborted) setError(describeError(e));
          });
      },
      q ? SEARCH_DEBOUNCE_MS : 0,
    );
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [q, role, status]);
  useEffect(() => {
    unwrap(client.GET("/api/v1/admin/plans"))
      .then(setPlans)
      .catch(() => setPlans([]));
  }, []);
  const shown = users ?? [];
  const defaultPlan = useMemo(() => plans.find((p) => p.is_default), [plans]);

  const replace = (updated: User) => setUsers((list) => (list ?? []).map((u) => (u.id === updated.id ? updated : u)));
  async function patch(user: User, body: { role?: Role; status?: UserStatus; plan_id?: string | null }) {
    setError(null);
    try {
      replace(await unwrap(client.PATCH("/api/v1/admin/users/{user_id}", { params: { path: { user_id: user.id } }, body })));
    } catch (e) {
      setError(describeError(e));
    }
  }
  async function resetLimits(user: User) {
    setError(null);
    try {
      replace(
        await unwrap(client.POST("/api/v1/admin/users/{user_id}/limits/reset", { params: { path: { user_id: user.id } } })),
      );
      toast(`The token counts of ${user.email} start afresh.`, "success");
    } catch (e) {
      setError(describeError(e));
    }
  }
  const ownLimits = (u: User) =>
    u.daily_token_limit == null && u.monthly_token_limit == null
      ? "plan's"
      : `${formatTokens(u.daily_token_limit)} / day · ${formatTokens(u.monthly_token_limit)} / month`;

  return (
    <Card
      title="Users"
      actions={
        <div className="flex w-full flex-wrap gap-2 sm:w-auto">
          <Input
            type="search"
            aria-label="Search users"
            placeholder="Search e-mail or name"
            className="w-full sm:w-64"
            data-testid="user-search"
            value={q}
            onChange={(e) => setQ(e.target.value)}
          />
          <Select aria-label="Filter by role" className="w-28" data-testid="user-filter-role" value={role} onChange={(e) => setRole(e.target.value as Role | "")}>
            <option value="">any role</option>
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </Select>
          <Select aria-label="Filter by status" className="w-32" data-testid="user-filter-status" value={status} onChange={(e) => setStatus(e.target.value as UserStatus | "")}>
            <option value="">any status</option>
            {USER_STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </Select>
        </div>
      }
    >
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      {!users ? (
        <Spinner />
      ) : (
        // a table from md up (scrolling inside its card if the screen is narrower than it);
        // on a phone each user is a block of its own, with the labels the header gave
        <div className="md:overflow-x-auto" data-testid="users-table-scroll">
          <table className="w-full text-sm max-md:block md:min-w-[60rem]">
            <thead className="text-left text-muted-foreground max-md:hidden">
              <tr>
                <th className="py-1 pr-3 font-medium">User</th>
                <th className="py-1 pr-3 font-medium">Role</th>
                <th className="py-1 pr-3 font-medium">Status</th>
                <th className="py-1 pr-3 font-medium">Plan</th>
                <th className="py-1 pr-3 font-medium">Token limits</th>
                <th className="py-1 pr-3 font-medium">Joined</th>
                <th className="py-1 font-medium" />
              </tr>
            </thead>
            <tbody className="max-md:block">
              {shown.map((u) => {
                const self = u.id === me?.id;
                return (
                  <tr
                    key={u.id}
                    data-testid="user-row"
                    data-user-id={u.id}
                    className="border-t border-border max-md:flex max-md:flex-wrap max-md:items-center max-md:gap-x-3 max-md:gap-y-2 max-md:py-3"
                  >
                    <td className="py-2 pr-3 max-md:w-full max-md:p-0">
                      <div className="font-medium break-all">{u.email}</div>
                      {u.display_name && <div className="text-xs text-muted-foreground">{u.display_name}</div>}
                      {u.totp_enabled && <Badge className="mt-1">2FA</Badge>}
                    </td>
                    <td className="py-2 pr-3 max-md:p-0">
                      <Select
                        aria-label={`Role of ${u.email}`}
                        data-testid="user-role"
                        className="w-28"
                        value={u.role}
                        disabled={self}
                        onChange={(e) => patch(u, { role: e.target.value as Role })}
                      >
                        {ROLES.map((r) => (
                          <option key={r} value={r}>
                            {r}
                          </option>
                        ))}
                      </Select>
                    </td>
                    <td className="py-2 pr-3 max-md:p-0">
                      <Badge data-testid="user-status" className={u.status !== "active" ? "text-destructive" : undefined}>
                        {u.status}
                      </Badge>
                    </td>
                    <td className="py-2 pr-3 max-md:p-0">
                      <Select
                        aria-label={`Plan of ${u.email}`}
                        data-testid="user-plan"
                        className="w-36 max-md:w-auto"
                        value={u.plan_id ?? ""}
                        onChange={(e) => patch(u, { plan_id: e.target.value || null })}
                      >
                        <option value="">{defaultPlan ? `default (${defaultPlan.name})` : "default (none)"}</option>
                        {plans.map((p) => (
                          <option key={p.id} value={p.id}>
                            {p.name}
                          </option>
                        ))}
                        {u.plan_id && !plans.some((p) => p.id === u.plan_id) && <option value={u.plan_id}>unknown plan</option>}
                      </Select>
                    </td>
                    <td className="py-2 pr-3 text-xs max-md:w-full max-md:p-0 max-md:before:content-['Token_limits:_']" data-testid="user-limits">
                      {ownLimits(u)}
                      {u.limits_reset_at && <div className="text-muted-foreground">reset {formatDateTime(u.limits_reset_at)}</div>}
                    </td>
                    <td className="py-2 pr-3 whitespace-nowrap max-md:w-full max-md:p-0 max-md:text-xs max-md:text-muted-foreground max-md:before:content-['Joined_']">
                      {formatDateTime(u.created_at)}
                    </td>
                    <td className="py-2 max-md:w-full max-md:p-0">
                      <div className="flex justify-end gap-2 max-md:flex-wrap max-md:justify-start">
                        {u.status === "active" ? (
                          <Button size="sm" variant="destructive" data-testid="user-ban" disabled={self} onClick={() => patch(u, { status: "banned" })}>
                            Ban
                          </Button>
                        ) : (
                          <Button size="sm" variant="outline" data-testid="user-unban" disabled={self} onClick={() => patch(u, { status: "active" })}>
                            Unban
                          </Button>
                        )}
                        <Button size="sm" variant="outline" data-testid="user-grant" onClick={() => setGranting(u)}>
                          Grant credits
                        </Button>
                        <Button size="sm" variant="outline" data-testid="user-limits-edit" onClick={() => setLimiting(u)}>
                          Limits
                        </Button>
                        <Button size="sm" variant="outline" data-testid="user-limits-reset" title="Usage before now stops counting toward the limits" onClick={() => resetLimits(u)}>
                          Reset limits
                        </Button>
                      </div>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          {shown.length === 0 && <p className="py-3 text-sm text-muted-foreground">No users match.</p>}
        </div>
      )}
      <GrantDialog user={granting} onClose={() => setGranting(null)} />
      <LimitsDialog user={limiting} onClose={() => setLimiting(null)} onSaved={replace} />
    </Card>
  );
}
