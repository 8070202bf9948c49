import { useState, type FormEvent } from "react";
import { ApiError, describeError } from "../lib/api";
import { useAccess } from "../store/access";
import {
  MAX_TOKENS_LIMIT,
  MODEL_ALIASES,
  modelChoices,
  SYSTEM_PROMPT_MAX,
  TEMPERATURE_MAX,
  TONES,
  settingsPatch,
  toDraft,
  validateSettings,
  type SettingsDraft,
  type SettingsErrors,
} from "../lib/settings";
import type { ChatSettings } from "../lib/types";
import { Button } from "./ui/button";
import { Field, Input, Select, Textarea } from "./ui/input";
import { ErrorBanner } from "./ui/misc";

export interface SettingsFormProps {
  initial: ChatSettings;
  /** Receives only the changed fields (the PATCH body) and the full values. */
  onSubmit: (patch: Partial<ChatSettings>, values: ChatSettings) => Promise<void> | void;
  submitLabel?: string;
}

const FIELDS: (keyof SettingsDraft)[] = ["model_alias", "temperature", "max_tokens", "system_prompt", "tone"];

export function SettingsForm({ initial, onSubmit, submitLabel = "Save settings" }: SettingsFormProps) {
  const [draft, setDraft] = useState<SettingsDraft>(() => toDraft(initial));
  const [errors, setErrors] = useState<SettingsErrors>({});
  const [formError, setFormError] = useState<string | null>(null);
  const [saving, setSaving] = useState(false);
  const [saved, setSaved] = useState(false);
  const allowed = useAccess((s) => s.models?.aliases);
  const aliases = modelChoices(allowed ?? MODEL_ALIASES, initial.model_alias);

  const change = (field: keyof SettingsDraft, value: string) => {
    setDraft((d) => ({ ...d, [field]: value }));
    setErrors((e) => ({ ...e, [field]: undefined }));
    setSaved(false);
  };

  async function submit(event: FormEvent) {
    event.preventDefault();
    setFormError(null);
    const result = validateSettings(draft);
    if (!result.ok) {
      setErrors(result.errors);
      return;
    }
    setErrors({});
    setSaving(true);
    try {
      await onSubmit(settingsPatch(initial, result.values), result.values);
      setSaved(true);
    } catch (error) {
      if (error instanceof ApiError && error.errors.length) {
        const fieldErrors: SettingsErrors = {};
        const rest: string[] = [];
        for (const e of error.errors) {
          const name = e.field.split(".").pop() as keyof SettingsDraft;
          if (FIELDS.includes(name)) fieldErrors[name] = e.message;
          else rest.push(`${e.field}: ${e.message}`);
        }
        setErrors(fieldErrors);
        setFormError(rest.length ? rest.join("; ") : error.detail);
      } else if (error instanceof ApiError && (error.code === "unknown_model" || error.code === "model_forbidden")) {
        setErrors({ model_alias: error.detail });
      } else {
        setFormError(describeError(error));
      }
    } finally {
      setSaving(false);
    }
  }

  const temperature = Number(draft.temperature);
  return (
    <form onSubmit={submit} noValidate className="space-y-4" aria-label="Chat settings" data-testid="settings-form">
      <ErrorBanner message={formError} />
      <Field label="Model" error={errors.model_alias} hint={allowed ? "The models your account may use." : "Aliases the platform serves; the API refuses one it does not."}>
        {(p) => (
          <Select {...p} name="model_alias" value={draft.model_alias} onChange={(e) => change("model_alias", e.target.value)}>
            {aliases.map((a) => (
              <option key={a} value={a}>
                {a}
              </option>
            ))}
          </Select>
        )}
      </Field>
      <Field label="Temperature" error={errors.temperature} hint={`0 (focused) to ${TEMPERATURE_MAX} (creative).`}>
        {(p) => (
          <div className="flex items-center gap-3">
            <input
              type="range"
              min={0}
              max={TEMPERATURE_MAX}
              step={0.05}
              aria-label="Temperature slider"
              className="flex-1 accent-[var(--primary)]"
              value={Number.isFinite(temperature) ? Math.min(Math.max(temperature, 0), TEMPERATURE_MAX) : 0}
              onChange={(e) => change("temperature", e.target.value)}
            />
            <Input
              {...p}
              name="temperature"
              inputMode="decimal"
              className="w-24"
              value={draft.temperature}
              onChange={(e) => change("temperature", e.target.value)}
            />
          </div>
        )}
      </Field>
      <Field label="Max tokens" error={errors.max_tokens} hint={`1 to ${MAX_TOKENS_LIMIT} tokens per answer.`}>
        {(p) => (
          <Input
            {...p}
            name="max_tokens"
            inputMode="numeric"
            value={draft.max_tokens}
            onChange={(e) => change("max_tokens", e.target.value)}
          />
        )}
      </Field>
      <fieldset>
        <legend className="mb-1.5 text-sm font-medium">Tone</legend>
        <div className="flex flex-wrap gap-2" role="radiogroup" aria-label="Tone">
          {TONES.map((tone) => (
            <label
              key={tone}
              className="flex cursor-pointer items-center gap-1.5 rounded-md border border-border px-3 py-1.5 text-sm has-[:checked]:border-primary has-[:checked]:bg-primary/10 has-[:focus-visible]:outline-2 has-[:focus-visible]:outline-ring"
            >
              <input
                type="radio"
                name="tone"
                value={tone}
                className="sr-only"
                checked={draft.tone === tone}
                onChange={() => change("tone", tone)}
              />
              {tone}
            </label>
          ))}
        </div>
        {errors.tone && (
          <p role="alert" className="mt-1 text-sm text-destructive">
            {errors.tone}
          </p>
        )}
      </fieldset>
      <Field
        label="System prompt"
        error={errors.system_prompt}
        hint={`${draft.system_prompt.length} / ${SYSTEM_PROMPT_MAX} characters.`}
      >
        {(p) => (
          <Textarea
            {...p}
            name="system_prompt"
            rows={4}
            value={draft.system_prompt}
            onChange={(e) => change("system_prompt", e.target.value)}
          />
        )}
      </Field>
      <div className="flex items-center gap-3">
        <Button type="submit" disabled={saving} data-testid="settings-save">
          {saving ? "Saving…" : submitLabel}
        </Button>
        {saved && (
          <span role="status" className="text-sm text-muted-foreground">
            Saved.
          </span>
        )}
      </div>
    </form>
  );
}
