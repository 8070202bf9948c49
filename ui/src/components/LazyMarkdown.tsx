// The Markdown pipeline (react-markdown, remark-gfm, lowlight) is a separate chunk: the
// first paint shows the text as typed (React escapes it), then the rendered Markdown.
import { lazy, Suspense } from "react";

const load = () => import("./Markdown").then((m) => ({ default: m.Markdown }));
const Markdown = lazy(load);

/** Start fetching the chunk early (called once the app has started). */
export function preloadMarkdown() {
  void load();
}

export function LazyMarkdown({ text }: { text: string }) {
  return (
    <Suspense fallback={<div className="break-words whitespace-pre-wrap">{text}</div>}>
      <Markdown text={text} />
    </Suspense>
  );
}
