// The settings new chats start with. The API keeps settings per chat only (no user
// defaults endpoint), so the defaults live in this browser and are sent with POST /chats.
import { create } from "zustand";
import { DEFAULT_SETTINGS } from "../lib/settings";
import type { ChatSettings } from "../lib/types";

const KEY = "orchard.chat-defaults";

function load(): ChatSettings {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) ?? "null");
    return saved ? { ...DEFAULT_SETTINGS, ...saved } : DEFAULT_SETTINGS;
  } catch {
    return DEFAULT_SETTINGS;
  }
}

interface DefaultsState {
  defaults: ChatSettings;
  save: (settings: ChatSettings) => void;
}

export const useDefaults = create<DefaultsState>((set) => ({
  defaults: load(),
  save(settings) {
    localStorage.setItem(KEY, JSON.stringify(settings));
    set({ defaults: settings });
  },
}));
