import { create } from "zustand";

interface UiState {
  drawerOpen: boolean;
  setDrawer: (open: boolean) => void;
}

export const useUi = create<UiState>((set) => ({
  drawerOpen: false,
  setDrawer: (drawerOpen) => set({ drawerOpen }),
}));
