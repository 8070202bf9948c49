import { useState, type ReactNode } from "react";
import { describeError } from "../lib/api";
import { ErrorBanner } from "./ui/misc";

/** An on/off setting of the signed-in account, saved the moment it is clicked (the privacy
 * page's feedback consent, the settings page's memory switch). While it saves it is
 * disabled; a refusal shows above it and the switch stays as the server has it. */
export function AccountSwitch({
  testId,
  on,
  label,
  description,
  save,
}: {
  testId: string;
  on: boolean;
  label: string;
  description: ReactNode;
  save: (next: boolean) => Promise<void>;
}) {
  const [saving, setSaving] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function toggle(next: boolean) {
    setError(null);
    setSaving(true);
    try {
      await save(next);
    } catch (err) {
      setError(describeError(err));
    } finally {
      setSaving(false);
    }
  }

  return (
    <>
      <ErrorBanner message={error} />
      <label className="flex items-start gap-3 text-sm">
        <input
          type="checkbox"
          role="switch"
          className="mt-1"
          data-testid={testId}
          checked={on}
          disabled={saving}
          aria-checked={on}
          onChange={(e) => toggle(e.target.checked)}
        />
        <span>
          <span className="font-medium">{label}</span>
          <span className="block text-muted-foreground">{description}</span>
        </span>
      </label>
    </>
  );
}
