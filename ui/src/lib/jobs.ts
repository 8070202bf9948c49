// Training jobs (POST /admin/jobs): the DAGs an admin may trigger and the client-side
// check of the conf typed as JSON. Airflow validates the Params themselves and the API
// passes its refusal back (422 `conf_refused`).

import { JOB_CONF_MAX, JOB_DAGS } from "../api/limits";
import type { JobDag } from "./types";

/** The DAGs the API lets an admin trigger, and the most characters of a conf as JSON. */
export { JOB_CONF_MAX, JOB_DAGS };
export type { JobDag };

export const CONF_EXAMPLES: Record<JobDag, string> = {
  orchard_build: '{\n  "data": {"max_pages": 500}\n}',
  orchard_posttrain: '{\n  "stages": ["sft", "dpo"],\n  "sft_steps": 150\n}',
};

export type ConfCheck = { ok: true; conf: Record<string, unknown> } | { ok: false; error: string };

/** The conf as the API takes it: a JSON object (blank means `{}`). */
export function validateConf(text: string): ConfCheck {
  if (!text.trim()) return { ok: true, conf: {} };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    return { ok: false, error: `Conf is not valid JSON: ${reason}` };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value))
    return { ok: false, error: 'Conf must be a JSON object, like {"sft_steps": 150}.' };
  if (JSON.stringify(value).length > JOB_CONF_MAX)
    return { ok: false, error: `Conf is at most ${JOB_CONF_MAX} characters of JSON.` };
  return { ok: true, conf: value as Record<string, unknown> };
}

/** Runs that are not finished yet: the page keeps polling while there are some. */
export function isActive(state: string): boolean {
  return state === "queued" || state === "running" || state === "restarting";
}
