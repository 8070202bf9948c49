// Model and user text as Markdown (GFM). Raw HTML is never parsed as HTML: without
// rehype-raw, react-markdown turns it into text, so `<img onerror=…>` shows as typed.
// URLs pass react-markdown's default transform (no javascript:), links open with
// rel="noopener noreferrer", images are shown as links (no remote fetches).
import { memo, useState, type ReactNode } from "react";
import ReactMarkdown, { type Components } from "react-markdown";
import remarkGfm from "remark-gfm";
import type { Element } from "hast";
import { Check, Copy } from "lucide-react";
import rehypeLowlight, { textOf } from "../lib/highlight";
import { copyText } from "../lib/clipboard";

function CodeBlock({ node, children }: { node?: Element; children?: ReactNode }) {
  const [copied, setCopied] = useState(false);
  const code = node ? textOf(node).replace(/\n$/, "") : "";
  const codeEl = node?.children.find((c): c is Element => c.type === "element" && c.tagName === "code");
  const langClass = codeEl?.properties?.className;
  const lang = (Array.isArray(langClass) ? langClass.map(String) : [])
    .find((c) => c.startsWith("language-"))
    ?.slice(9);
  return (
    <div className="group/code relative my-3 overflow-hidden rounded-lg border border-border bg-code">
      <div className="flex items-center justify-between border-b border-border px-3 py-1 text-xs text-muted-foreground">
        <span>{lang ?? "text"}</span>
        <button
          type="button"
          data-testid="copy-code"
          className="inline-flex items-center gap-1 rounded px-1.5 py-0.5 hover:bg-accent focus-visible:outline-2 focus-visible:outline-ring"
          aria-label={copied ? "Code copied" : "Copy code"}
          onClick={async () => {
            if (await copyText(code)) {
              setCopied(true);
              setTimeout(() => setCopied(false), 1500);
            }
          }}
        >
          {copied ? <Check className="size-3.5" aria-hidden /> : <Copy className="size-3.5" aria-hidden />}
          {copied ? "Copied" : "Copy"}
        </button>
      </div>
      <pre className="overflow-x-auto p-3 text-sm leading-relaxed">{children}</pre>
    </div>
  );
}

const components: Components = {
  pre: ({ node, children }) => <CodeBlock node={node}>{children}</CodeBlock>,
  a: ({ href, children }) => (
    <a href={href} target="_blank" rel="noopener noreferrer" className="text-primary underline underline-offset-2">
      {children}
    </a>
  ),
  img: ({ src, alt }) =>
    typeof src === "string" && src ? (
      <a href={src} target="_blank" rel="noopener noreferrer" className="text-primary underline underline-offset-2">
        [image{alt ? `: ${alt}` : ""}]
      </a>
    ) : (
      <span>[image{alt ? `: ${alt}` : ""}]</span>
    ),
  table: ({ children }) => (
    <div className="my-3 overflow-x-auto">
      <table className="w-full border-collapse text-sm">{children}</table>
    </div>
  ),
};

const remarkPlugins = [remarkGfm];
const rehypePlugins = [rehypeLowlight];

export const Markdown = memo(function Markdown({ text }: { text: string }) {
  return (
    <div className="markdown break-words">
      <ReactMarkdown remarkPlugins={remarkPlugins} rehypePlugins={rehypePlugins} components={components}>
        {text}
      </ReactMarkdown>
    </div>
  );
});
