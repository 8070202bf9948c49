import { create } from "zustand";

export interface Toast {
  id: number;
  message: string;
  tone?: "info" | "error" | "success";
  action?: { label: string; onClick: () => void; testId?: string };
  duration: number;
}

interface ToastState {
  toasts: Toast[];
  push: (toast: Omit<Toast, "id" | "duration"> & { duration?: number }) => number;
  dismiss: (id: number) => void;
}

let next = 1;

export const useToasts = create<ToastState>((set, get) => ({
  toasts: [],
  push(toast) {
    const id = next++;
    const duration = toast.duration ?? 4_000;
    set({ toasts: [...get().toasts, { ...toast, id, duration }] });
    if (duration > 0) setTimeout(() => get().dismiss(id), duration);
    return id;
  },
  dismiss(id) {
    set({ toasts: get().toasts.filter((t) => t.id !== id) });
  },
}));

export const toast = (message: string, tone: Toast["tone"] = "info") =>
  useToasts.getState().push({ message, tone });
