import { create } from "zustand";
import { api, describeError, tokens, API_BASE } from "../lib/api";
import type { Chat, ChatSettings, Folder } from "../lib/types";
import { toast, useToasts } from "./toasts";

export const UNDO_DELAY_MS = 5_000;

interface ChatsState {
  chats: Chat[];
  folders: Folder[];
  loaded: boolean;
  /** Chats deleted in the UI whose DELETE waits out the undo delay. */
  pendingDelete: string[];
  load: () => Promise<void>;
  create: (settings: ChatSettings, title: string) => Promise<Chat>;
  update: (id: string, patch: Partial<Chat> & Record<string, unknown>) => Promise<Chat>;
  upsert: (chat: Chat) => void;
  remove: (id: string, onGone?: () => void) => void;
  createFolder: (name: string) => Promise<void>;
  renameFolder: (id: string, name: string) => Promise<void>;
  deleteFolder: (id: string) => Promise<void>;
}

const timers = new Map<string, ReturnType<typeof setTimeout>>();

function sortChats(chats: Chat[]): Chat[] {
  return [...chats].sort(
    (a, b) => Number(b.pinned) - Number(a.pinned) || b.updated_at.localeCompare(a.updated_at),
  );
}

export const useChats = create<ChatsState>((set, get) => ({
  chats: [],
  folders: [],
  loaded: false,
  pendingDelete: [],
  async load() {
    const [chats, folders] = await Promise.all([
      api<Chat[]>("/chats?limit=500"),
      api<Folder[]>("/folders").catch(() => get().folders),
    ]);
    set({ chats: sortChats(chats), folders, loaded: true });
  },
  async create(settings, title) {
    const chat = await api<Chat>("/chats", { method: "POST", json: { ...settings, title } });
    get().upsert(chat);
    return chat;
  },
  async update(id, patch) {
    const chat = await api<Chat>(`/chats/${id}`, { method: "PATCH", json: patch });
    get().upsert(chat);
    return chat;
  },
  upsert(chat) {
    const others = get().chats.filter((c) => c.id !== chat.id);
    set({ chats: sortChats([...others, chat]) });
  },
  remove(id, onGone) {
    if (timers.has(id)) return;
    set({ pendingDelete: [...get().pendingDelete, id] });
    onGone?.();
    const unhide = () => set({ pendingDelete: get().pendingDelete.filter((p) => p !== id) });
    const toastId = useToasts.getState().push({
      message: "Chat deleted.",
      duration: UNDO_DELAY_MS,
      action: {
        label: "Undo",
        testId: "undo",
        onClick: () => {
          clearTimeout(timers.get(id));
          timers.delete(id);
          unhide();
          useToasts.getState().dismiss(toastId);
        },
      },
    });
    timers.set(
      id,
      setTimeout(async () => {
        timers.delete(id);
        try {
          await api(`/chats/${id}`, { method: "DELETE" });
          set({ chats: get().chats.filter((c) => c.id !== id) });
          unhide();
        } catch (error) {
          unhide();
          toast(`Could not delete the chat: ${describeError(error)}`, "error");
        }
      }, UNDO_DELAY_MS),
    );
  },
  async createFolder(name) {
    const folder = await api<Folder>("/folders", { method: "POST", json: { name } });
    set({ folders: [...get().folders, folder] });
  },
  async renameFolder(id, name) {
    const folder = await api<Folder>(`/folders/${id}`, { method: "PATCH", json: { name } });
    set({ folders: get().folders.map((f) => (f.id === id ? folder : f)) });
  },
  async deleteFolder(id) {
    await api(`/folders/${id}`, { method: "DELETE" });
    set({
      folders: get().folders.filter((f) => f.id !== id),
      chats: get().chats.map((c) => (c.folder_id === id ? { ...c, folder_id: null } : c)),
    });
  },
}));

// Leaving the page inside the undo delay still deletes (keepalive outlives the page).
if (typeof window !== "undefined") {
  window.addEventListener("pagehide", () => {
    for (const [id, timer] of timers) {
      clearTimeout(timer);
      const access = tokens.access;
      void fetch(`${API_BASE}/chats/${id}`, {
        method: "DELETE",
        keepalive: true,
        headers: access ? { Authorization: `Bearer ${access}` } : {},
      }).catch(() => undefined);
    }
    timers.clear();
  });
}
