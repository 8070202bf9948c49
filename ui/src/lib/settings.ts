// Chat settings: validation of the form's text fields against the API's own bounds
// (src/api/limits.ts, generated from its OpenAPI document), and the PATCH body (only what
// changed: PATCH /chats/{id} changes only the fields sent).

import { MAX_TOKENS_LIMIT, MODEL_ALIAS_MAX, SYSTEM_PROMPT_MAX, TEMPERATURE_MAX, TONES } from "../api/limits";
import type { ChatSettings, Tone } from "./types";

export { MAX_TOKENS_LIMIT, SYSTEM_PROMPT_MAX, TEMPERATURE_MAX, TONES };

/** ORCHARD_SERVE_ALIASES' defaults (orchard/settings.py), used until `GET /models` (the
 * aliases this user may chat with, store/access.ts) has answered. The API answers 422
 * `unknown_model` / 403 `model_forbidden` for another, and the form shows that. */
export const MODEL_ALIASES = ["champion", "challenger"] as const;

/** The model select's options: the allowed aliases, plus the current one if it is not
 * among them (a chat set before a rule changed), marked so it reads as unavailable. */
export function modelChoices(allowed: readonly string[], current: string): string[] {
  return allowed.includes(current) || !current ? [...allowed] : [current, ...allowed];
}

export const DEFAULT_SETTINGS: ChatSettings = {
  model_alias: "champion",
  temperature: 0.7,
  max_tokens: 512,
  system_prompt: "",
  tone: "neutral",
};

/** What the form holds: numbers as the text typed. */
export interface SettingsDraft {
  model_alias: string;
  temperature: string;
  max_tokens: string;
  system_prompt: string;
  tone: string;
}

export type SettingsErrors = Partial<Record<keyof SettingsDraft, string>>;

export function toDraft(settings: ChatSettings): SettingsDraft {
  return {
    model_alias: settings.model_alias,
    temperature: String(settings.temperature),
    max_tokens: String(settings.max_tokens),
    system_prompt: settings.system_prompt,
    tone: settings.tone,
  };
}

export function validateSettings(
  draft: SettingsDraft,
): { ok: true; values: ChatSettings } | { ok: false; errors: SettingsErrors } {
  const errors: SettingsErrors = {};
  const alias = draft.model_alias.trim();
  if (!alias) errors.model_alias = "Choose a model.";
  else if (alias.length > MODEL_ALIAS_MAX) errors.model_alias = `A model alias is at most ${MODEL_ALIAS_MAX} characters.`;

  const t = draft.temperature.trim();
  const temperature = Number(t);
  if (t === "" || !Number.isFinite(temperature)) errors.temperature = "Temperature must be a number.";
  else if (temperature < 0 || temperature > TEMPERATURE_MAX)
    errors.temperature = `Temperature must be between 0 and ${TEMPERATURE_MAX}.`;

  const m = draft.max_tokens.trim();
  const maxTokens = Number(m);
  if (!/^\d+$/.test(m)) errors.max_tokens = "Max tokens must be a whole number.";
  else if (maxTokens < 1 || maxTokens > MAX_TOKENS_LIMIT)
    errors.max_tokens = `Max tokens must be between 1 and ${MAX_TOKENS_LIMIT}.`;

  if (draft.system_prompt.length > SYSTEM_PROMPT_MAX)
    errors.system_prompt = `The system prompt is at most ${SYSTEM_PROMPT_MAX} characters (now ${draft.system_prompt.length}).`;

  if (!(TONES as readonly string[]).includes(draft.tone)) errors.tone = `Tone must be one of ${TONES.join(", ")}.`;

  if (Object.keys(errors).length) return { ok: false, errors };
  return {
    ok: true,
    values: {
      model_alias: alias,
      temperature,
      max_tokens: maxTokens,
      system_prompt: draft.system_prompt,
      tone: draft.tone as Tone,
    },
  };
}

/** The fields of `values` that differ from `initial`. */
export function settingsPatch(initial: ChatSettings, values: ChatSettings): Partial<ChatSettings> {
  const patch: Partial<ChatSettings> = {};
  for (const key of Object.keys(values) as (keyof ChatSettings)[]) {
    if (values[key] !== initial[key]) (patch as Record<string, unknown>)[key] = values[key];
  }
  return patch;
}

export function pickSettings(chat: ChatSettings): ChatSettings {
  const { model_alias, temperature, max_tokens, system_prompt, tone } = chat;
  return { model_alias, temperature, max_tokens, system_prompt, tone };
}
