import { create } from "zustand";
import { client, describeError, tokens, unwrap } from "../lib/api";
import { useAccess } from "./access";
import type { Me, TokenPair, User } from "../lib/types";

interface SessionState {
  user: Me | null;
  /** loading: tokens exist and /users/me is on its way. */
  status: "loading" | "ready" | "anonymous" | "error";
  error: string | null;
  credits: number | null;
  loadMe: () => Promise<void>;
  loadCredits: () => Promise<void>;
  login: (pair: TokenPair) => Promise<void>;
  logout: () => Promise<void>;
  setUser: (user: User | Me) => void;
  reset: () => void;
}

export const useSession = create<SessionState>((set, get) => ({
  user: null,
  status: tokens.access ? "loading" : "anonymous",
  credits: null,
  error: null,
  async loadMe() {
    if (!tokens.access && !tokens.refresh) {
      set({ user: null, status: "anonymous" });
      return;
    }
    try {
      const user = await unwrap(client.GET("/api/v1/users/me"));
      set({ user, status: "ready", error: null });
      void get().loadCredits();
      void useAccess.getState().load();
    } catch (error) {
      if (!tokens.access) set({ user: null, status: "anonymous", error: null });
      else set({ user: null, status: "error", error: describeError(error) });
    }
  },
  async loadCredits() {
    try {
      const statement = await unwrap(client.GET("/api/v1/credits"));
      set({ credits: statement.balance });
    } catch {
      /* the balance stays as it was */
    }
  },
  async login(pair) {
    tokens.set(pair);
    set({ status: "loading" });
    await get().loadMe();
  },
  async logout() {
    try {
      await client.POST("/api/v1/auth/logout");
    } catch {
      /* the tokens go anyway */
    }
    get().reset();
  },
  setUser(user) {
    // /auth/totp/* answer without the linked providers (only /users/me lists them)
    const known = get().user;
    const providers = known && known.id === user.id ? known.oauth_providers : [];
    set({ user: { oauth_providers: providers, ...user } });
  },
  reset() {
    tokens.clear();
    useAccess.getState().reset();
    set({ user: null, status: "anonymous", credits: null });
  },
}));
