import { useEffect, useRef, type RefObject } from "react";

const FOCUSABLE = 'a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])';

function focusables(root: HTMLElement): HTMLElement[] {
  return [...root.querySelectorAll<HTMLElement>(FOCUSABLE)].filter(
    (el) => !el.matches(":disabled") && el.tabIndex >= 0 && !el.closest("[inert], [aria-hidden='true']"),
  );
}

/** While `active`: focus moves into `ref` (its first focusable), Tab and Shift+Tab cycle
 * inside it, Escape calls `onEscape`; when it ends, focus goes back to what had it before
 * (the opener). Keys pressed while focus is elsewhere (a dialog or menu portalled out of
 * the element, which traps focus itself) are left alone. */
export function useFocusTrap(ref: RefObject<HTMLElement | null>, active: boolean, onEscape: () => void) {
  const escape = useRef(onEscape);
  escape.current = onEscape;
  useEffect(() => {
    const root = ref.current;
    if (!active || !root) return;
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    focusables(root)[0]?.focus();
    const ours = () => document.activeElement === document.body || root.contains(document.activeElement);
    const onKey = (e: KeyboardEvent) => {
      if (!ours()) return;
      if (e.key === "Escape") {
        e.preventDefault();
        escape.current();
      } else if (e.key === "Tab") {
        const list = focusables(root);
        if (!list.length) return e.preventDefault();
        const first = list[0];
        const last = list[list.length - 1];
        const at = document.activeElement;
        if (e.shiftKey && (at === first || !root.contains(at))) {
          e.preventDefault();
          last.focus();
        } else if (!e.shiftKey && (at === last || !root.contains(at))) {
          e.preventDefault();
          first.focus();
        }
      }
    };
    document.addEventListener("keydown", onKey);
    return () => {
      document.removeEventListener("keydown", onKey);
      if (opener?.isConnected && ours()) opener.focus();
    };
  }, [ref, active]);
}
