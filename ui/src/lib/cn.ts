import { twMerge } from "tailwind-merge";

/** The classes given, later ones winning where two set the same property (`w-full` then a
 * caller's `w-20` is `w-20`), as shadcn/ui's `cn`: without merging, the stylesheet's
 * order would decide, not the caller. */
export function cn(...parts: (string | false | null | undefined)[]): string {
  return twMerge(parts.filter(Boolean).join(" "));
}
