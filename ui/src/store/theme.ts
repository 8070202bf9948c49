import { create } from "zustand";

export type Theme = "light" | "dark";
const KEY = "orchard-theme";

function initial(): Theme {
  try {
    const saved = localStorage.getItem(KEY);
    if (saved === "light" || saved === "dark") return saved;
    return window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  } catch {
    return "light";
  }
}

export function applyTheme(theme: Theme) {
  document.documentElement.classList.toggle("dark", theme === "dark");
  document.documentElement.style.colorScheme = theme;
}

interface ThemeState {
  theme: Theme;
  toggle: () => void;
}

export const useTheme = create<ThemeState>((set, get) => ({
  theme: initial(),
  toggle() {
    const theme: Theme = get().theme === "dark" ? "light" : "dark";
    localStorage.setItem(KEY, theme);
    applyTheme(theme);
    set({ theme });
  },
}));
