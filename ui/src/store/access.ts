// What the server lets this user do: the chat models they may pick (GET /models) and the
// feature flags on for them (GET /features). Loaded with the session; the UI hides what
// the server would refuse (a share link with `shares` off) but the server still decides.
import { create } from "zustand";
import { client, unwrap } from "../lib/api";
import type { ChatModels } from "../lib/types";

interface AccessState {
  /** null until loaded (or on a server without the endpoint): the UI falls back. */
  models: ChatModels | null;
  features: string[] | null;
  load: () => Promise<void>;
  reset: () => void;
}

export const useAccess = create<AccessState>((set) => ({
  models: null,
  features: null,
  async load() {
    const [models, features] = await Promise.allSettled([
      unwrap(client.GET("/api/v1/models")),
      unwrap(client.GET("/api/v1/features")),
    ]);
    set({
      models: models.status === "fulfilled" ? models.value : null,
      features: features.status === "fulfilled" ? features.value.features : null,
    });
  },
  reset() {
    set({ models: null, features: null });
  },
}));

/** Whether a feature is on; unknown (not loaded) counts as on: the server refuses anyway. */
export function useFeature(key: string): boolean {
  return useAccess((s) => s.features === null || s.features.includes(key));
}
