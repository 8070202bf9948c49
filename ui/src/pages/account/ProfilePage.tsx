import { useState, type FormEvent } from "react";
import { DISPLAY_NAME_MAX, PASSWORD_MAX, PASSWORD_MIN } from "../../api/limits";
import { ApiError, client, describeError, unwrap } from "../../lib/api";
import { formatDateTime } from "../../lib/dates";
import { Button } from "../../components/ui/button";
import { Field, Input } from "../../components/ui/input";
import { Badge, Card, ErrorBanner } from "../../components/ui/misc";
import { ConfirmNotice, useConfirmation } from "../../components/ReauthNotice";
import { useSession } from "../../store/session";
import { toast } from "../../store/toasts";

export function ProfilePage() {
  const user = useSession((s) => s.user)!;
  const setUser = useSession((s) => s.setUser);
  const loadMe = useSession((s) => s.loadMe);
  const confirmation = useConfirmation(user);
  // no password yet (an OAuth sign-in made the account): set a first one, no current one
  const setting = !confirmation.askPassword;
  const [name, setName] = useState(user.display_name);
  const [nameError, setNameError] = useState<string | null>(null);
  const [pw, setPw] = useState({ current: "", next: "" });
  const [pwErrors, setPwErrors] = useState<{ current?: string; next?: string; form?: string }>({});

  async function saveName(e: FormEvent) {
    e.preventDefault();
    if (name.trim().length > DISPLAY_NAME_MAX)
      return setNameError(`The display name is at most ${DISPLAY_NAME_MAX} characters.`);
    setNameError(null);
    try {
      setUser(await unwrap(client.PATCH("/api/v1/users/me", { body: { display_name: name.trim() } })));
      toast("Profile saved.", "success");
    } catch (err) {
      setNameError(err instanceof ApiError && err.errors.length ? err.errors[0].message : describeError(err));
    }
  }

  async function changePassword(e: FormEvent) {
    e.preventDefault();
    const errors: typeof pwErrors = {};
    if (!setting && !pw.current) errors.current = "Enter your current password.";
    if (pw.next.length < PASSWORD_MIN) errors.next = `The new password needs at least ${PASSWORD_MIN} characters.`;
    else if (pw.next.length > PASSWORD_MAX) errors.next = `The password is at most ${PASSWORD_MAX} characters.`;
    setPwErrors(errors);
    confirmation.clear();
    if (Object.keys(errors).length) return;
    try {
      const body = setting ? { new_password: pw.next } : { current_password: pw.current, new_password: pw.next };
      await client.POST("/api/v1/users/me/password", { body });
      setPw({ current: "", next: "" });
      if (setting) {
        await loadMe(); // has_password is true from now on
        toast("Password set: you can log in with your e-mail and it too; your other sessions were logged out.", "success");
      } else toast("Password changed; your other sessions were logged out.", "success");
    } catch (err) {
      if (!confirmation.handle(err)) setPwErrors({ form: describeError(err) });
    }
  }

  return (
    <div className="space-y-4">
      <Card title="Profile">
        <dl className="mb-4 grid grid-cols-[auto_1fr] gap-x-4 gap-y-1 text-sm">
          <dt className="text-muted-foreground">E-mail</dt>
          <dd data-testid="profile-email" className="break-all">{user.email}</dd>
          <dt className="text-muted-foreground">Role</dt>
          <dd>
            <Badge>{user.role}</Badge>
          </dd>
          <dt className="text-muted-foreground">Member since</dt>
          <dd>{formatDateTime(user.created_at)}</dd>
        </dl>
        <form onSubmit={saveName} className="flex flex-col gap-3 sm:flex-row sm:items-end" noValidate>
          <Field label="Display name" error={nameError} className="flex-1">
            {(p) => <Input {...p} data-testid="profile-display-name" value={name} onChange={(e) => setName(e.target.value)} />}
          </Field>
          <Button type="submit" data-testid="profile-save">
            Save
          </Button>
        </form>
      </Card>
      <Card title={setting ? "Set a password" : "Change password"}>
        <form onSubmit={changePassword} className="space-y-3" noValidate data-testid="password-form">
          {setting && (
            <p className="text-sm text-muted-foreground">
              Your account signs in through a provider and has no password. With one, you can also log in with your e-mail;
              setting it needs a recent sign-in with your provider.
            </p>
          )}
          <ErrorBanner message={pwErrors.form} />
          <ConfirmNotice need={confirmation.need} user={user} />
          {!setting && (
            <Field label="Current password" error={pwErrors.current}>
              {(p) => (
                <Input {...p} type="password" autoComplete="current-password" value={pw.current} onChange={(e) => setPw({ ...pw, current: e.target.value })} />
              )}
            </Field>
          )}
          <Field label="New password" error={pwErrors.next} hint={`${PASSWORD_MIN} to ${PASSWORD_MAX} characters.`}>
            {(p) => (
              <Input {...p} type="password" autoComplete="new-password" value={pw.next} onChange={(e) => setPw({ ...pw, next: e.target.value })} />
            )}
          </Field>
          <Button type="submit">{setting ? "Set password" : "Change password"}</Button>
        </form>
      </Card>
    </div>
  );
}
