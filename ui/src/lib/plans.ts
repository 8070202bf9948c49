// The plan form: text fields in, the POST/PATCH body out (the API's bounds, src/api/limits.ts).
import { PLAN_DESCRIPTION_MAX, PLAN_NAME_MAX } from "../api/limits";
import { CREDIT_GRANT_MAX, limitText, parseLimit } from "./billing";
import type { Plan, PlanCreate } from "./types";

export interface PlanDraft {
  name: string;
  description: string;
  monthly_credits: string;
  daily_token_limit: string;
  monthly_token_limit: string;
  is_default: boolean;
}

export type PlanErrors = Partial<Record<keyof PlanDraft, string>>;

/** What POST/PATCH /admin/plans take: a plan's own fields. */
export type PlanBody = Required<PlanCreate>;

export const emptyPlan: PlanDraft = {
  name: "",
  description: "",
  monthly_credits: "0",
  daily_token_limit: "",
  monthly_token_limit: "",
  is_default: false,
};

export function planDraft(plan: Plan): PlanDraft {
  return {
    name: plan.name,
    description: plan.description,
    monthly_credits: String(plan.monthly_credits),
    daily_token_limit: limitText(plan.daily_token_limit),
    monthly_token_limit: limitText(plan.monthly_token_limit),
    is_default: plan.is_default,
  };
}

export function validatePlan(d: PlanDraft): { ok: true; body: PlanBody } | { ok: false; errors: PlanErrors } {
  const errors: PlanErrors = {};
  const name = d.name.trim();
  if (!name) errors.name = "Give the plan a name.";
  else if (name.length > PLAN_NAME_MAX) errors.name = `A name is at most ${PLAN_NAME_MAX} characters.`;
  if (d.description.trim().length > PLAN_DESCRIPTION_MAX) errors.description = `At most ${PLAN_DESCRIPTION_MAX} characters.`;
  const credits = parseLimit(d.monthly_credits, CREDIT_GRANT_MAX);
  if (!credits.ok) errors.monthly_credits = credits.error;
  else if (credits.value === null) errors.monthly_credits = "A whole number of credits (0 for none).";
  const daily = parseLimit(d.daily_token_limit);
  if (!daily.ok) errors.daily_token_limit = daily.error;
  const monthly = parseLimit(d.monthly_token_limit);
  if (!monthly.ok) errors.monthly_token_limit = monthly.error;
  if (Object.keys(errors).length || !credits.ok || !daily.ok || !monthly.ok) return { ok: false, errors };
  return {
    ok: true,
    body: {
      name,
      description: d.description.trim(),
      monthly_credits: credits.value ?? 0,
      daily_token_limit: daily.value,
      monthly_token_limit: monthly.value,
      is_default: d.is_default,
    },
  };
}
