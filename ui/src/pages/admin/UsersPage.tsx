import { useCallback, useEffect, useMemo, useState, type FormEvent } from "react";
import { api, describeError } from "../../lib/api";
import { formatDateTime } from "../../lib/dates";
import type { Role, User, UserStatus } from "../../lib/types";
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
    if (!/^\d+$/.test(amount.trim()) || n < 1 || n > 1_000_000_000) errs.amount = "A whole number from 1 to 1,000,000,000.";
    if (!reason.trim()) errs.reason = "Say why (it goes in the ledger and the audit log).";
    setErrors(errs);
    if (Object.keys(errs).length || !user) return;
    try {
      await api(`/admin/users/${user.id}/credits`, { method: "POST", json: { amount: n, reason: reason.trim() } });
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

export function UsersPage() {
  const me = useSession((s) => s.user);
  const [users, setUsers] = useState<User[] | null>(null);
  const [q, setQ] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [granting, setGranting] = useState<User | null>(null);

  const load = useCallback(() => {
    // the API has no search parameter: fetch its maximum page and filter here
    api<User[]>("/admin/users?limit=500")
      .then(setUsers)
      .catch((e) => setError(describeError(e)));
  }, []);
  useEffect(load, [load]);

  const shown = useMemo(() => {
    const needle = q.trim().toLowerCase();
    return (users ?? []).filter(
      (u) => !needle || u.email.toLowerCase().includes(needle) || u.display_name.toLowerCase().includes(needle),
    );
  }, [users, q]);

  async function patch(user: User, body: { role?: Role; status?: UserStatus }) {
    setError(null);
    try {
      const updated = await api<User>(`/admin/users/${user.id}`, { method: "PATCH", json: body });
      setUsers((list) => (list ?? []).map((u) => (u.id === updated.id ? updated : u)));
    } catch (e) {
      setError(describeError(e));
    }
  }

  return (
    <Card
      title="Users"
      actions={
        <Input
          type="search"
          aria-label="Search users"
          placeholder="Search e-mail or name"
          className="w-full sm:w-64"
          data-testid="user-search"
          value={q}
          onChange={(e) => setQ(e.target.value)}
        />
      }
    >
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      {!users ? (
        <Spinner />
      ) : (
        // the table scrolls inside its card on a phone; the page itself never does
        <div className="overflow-x-auto" data-testid="users-table-scroll">
          <table className="w-full min-w-[44rem] text-sm">
            <thead className="text-left text-muted-foreground">
              <tr>
                <th className="py-1 pr-3 font-medium">User</th>
                <th className="py-1 pr-3 font-medium">Role</th>
                <th className="py-1 pr-3 font-medium">Status</th>
                <th className="py-1 pr-3 font-medium">Joined</th>
                <th className="py-1 font-medium" />
              </tr>
            </thead>
            <tbody>
              {shown.map((u) => {
                const self = u.id === me?.id;
                return (
                  <tr key={u.id} data-testid="user-row" data-user-id={u.id} className="border-t border-border">
                    <td className="py-2 pr-3">
                      <div className="font-medium break-all">{u.email}</div>
                      {u.display_name && <div className="text-xs text-muted-foreground">{u.display_name}</div>}
                      {u.totp_enabled && <Badge className="mt-1">2FA</Badge>}
                    </td>
                    <td className="py-2 pr-3">
                      <Select
                        aria-label={`Role of ${u.email}`}
                        data-testid="user-role"
                        className="w-28"
                        value={u.role}
                        disabled={self}
                        onChange={(e) => patch(u, { role: e.target.value as Role })}
                      >
                        <option value="user">user</option>
                        <option value="admin">admin</option>
                      </Select>
                    </td>
                    <td className="py-2 pr-3">
                      <Badge data-testid="user-status" className={u.status !== "active" ? "text-destructive" : undefined}>
                        {u.status}
                      </Badge>
                    </td>
                    <td className="py-2 pr-3 whitespace-nowrap">{formatDateTime(u.created_at)}</td>
                    <td className="py-2">
                      <div className="flex justify-end gap-2">
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
    </Card>
  );
}
