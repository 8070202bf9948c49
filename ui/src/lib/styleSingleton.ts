// A stand-in for the `react-style-singleton` package (aliased in vite.config.ts), which
// Radix's modal dialogs use through react-remove-scroll to lock the page's scrolling. The
// package writes a <style> element, which the platform's CSP (`style-src 'self'`, no
// nonce) refuses; this one puts the same CSS in a constructed stylesheet
// (document.adoptedStyleSheets), which is CSSOM and not governed by style-src. Same API:
// the styles of the first user are added, removed when the last one goes.
import { useEffect } from "react";

function constructable(): boolean {
  try {
    return typeof document !== "undefined" && "adoptedStyleSheets" in document && typeof new CSSStyleSheet().replaceSync === "function";
  } catch {
    return false;
  }
}

export function stylesheetSingleton() {
  let counter = 0;
  let remove: (() => void) | null = null;
  return {
    add(css: string) {
      if (counter++ > 0 || typeof document === "undefined") return;
      if (constructable()) {
        const sheet = new CSSStyleSheet();
        sheet.replaceSync(css);
        document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
        remove = () => (document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet));
      } else {
        // no constructable stylesheets (old browsers, jsdom): the package's own way
        const tag = document.createElement("style");
        tag.appendChild(document.createTextNode(css));
        document.head.appendChild(tag);
        remove = () => tag.remove();
      }
    },
    remove() {
      if (--counter === 0 && remove) {
        remove();
        remove = null;
      }
    },
  };
}

export function styleHookSingleton() {
  const sheet = stylesheetSingleton();
  return (styles: string, isDynamic?: boolean) => {
    useEffect(() => {
      sheet.add(styles);
      return () => sheet.remove();
      // as the package: re-applied only when dynamic styles change
    }, [styles && isDynamic]);
  };
}

export function styleSingleton() {
  const useStyle = styleHookSingleton();
  return function Sheet({ styles, dynamic }: { styles: string; dynamic?: boolean }) {
    useStyle(styles, dynamic);
    return null;
  };
}
