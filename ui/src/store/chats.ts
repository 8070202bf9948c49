import { create } from "zustand";
import { client, describeError, unwrap } from "../lib/api";
import type { Chat, ChatSettings, ChatUpdate, Folder } from "../lib/types";
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
  update: (id: string, patch: ChatUpdate) => Promise<Chat>;
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
      unwrap(client.GET("/api/v1/chats", { params: { query: { limit: 500 } } })),
      unwrap(client.GET("/api/v1/folders")).catch(() => get().folders),
    ]);
    set({ chats: sortChats(chats), folders, loaded: true });
  },
  async create(settings, title) {
    const chat = await unwrap(client.POST("/api/v1/chats", { body: { ...settings, title } }));
    get().upsert(chat);
    return chat;
  },
  async update(id, patch) {
    const chat = await unwrap(client.PATCH("/api/v1/chats/{chat_id}", { params: { path: { chat_id: id } }, body: patch }));
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
          await client.DELETE("/api/v1/chats/{chat_id}", { params: { path: { chat_id: id } } });
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
    const folder = await unwrap(client.POST("/api/v1/folders", { body: { name } }));
    set({ folders: [...get().folders, folder] });
  },
  async renameFolder(id, name) {
    const folder = await unwrap(
      client.PATCH("/api/v1/folders/{folder_id}", { params: { path: { folder_id: id } }, body: { name } }),
    );
    set({ folders: get().folders.map((f) => (f.id === id ? folder : f)) });
  },
  async deleteFolder(id) {
    await client.DELETE("/api/v1/folders/{folder_id}", { params: { path: { folder_id: id } } });
    set({
      folders: get().folders.filter((f) => f.id !== id),
      chats: get().chats.map((c) => (c.folder_id === id ? { ...c, folder_id: null } : c)),
    });
  },
}));

// Leaving the page inside the undo delay still deletes (keepalive outlives the page; the
// client calls fetch before its first await unless the token needs a refresh).
if (typeof window !== "undefined") {
  window.addEventListener("pagehide", () => {
    for (const [id, timer] of timers) {
      clearTimeout(timer);
      void client
        .DELETE("/api/v1/chats/{chat_id}", { params: { path: { chat_id: id } }, keepalive: true })
        .catch(() => undefined);
    }
    timers.clear();
  });
}
