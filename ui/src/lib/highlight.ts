// A small rehype plugin: highlight `pre > code.language-*` with lowlight and a chosen
// set of highlight.js grammars (rehype-highlight would bundle all ~37 "common" ones).
import type { Element, ElementContent, Root, RootContent } from "hast";
import { createLowlight } from "lowlight";
import bash from "highlight.js/lib/languages/bash";
import c from "highlight.js/lib/languages/c";
import cpp from "highlight.js/lib/languages/cpp";
import css from "highlight.js/lib/languages/css";
import diff from "highlight.js/lib/languages/diff";
import dockerfile from "highlight.js/lib/languages/dockerfile";
import go from "highlight.js/lib/languages/go";
import java from "highlight.js/lib/languages/java";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import markdown from "highlight.js/lib/languages/markdown";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import shell from "highlight.js/lib/languages/shell";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";

export const lowlight = createLowlight({
  bash, c, cpp, css, diff, dockerfile, go, java, javascript, json, markdown, python, rust,
  shell, sql, typescript, xml, yaml,
});
lowlight.registerAlias({ bash: ["sh", "zsh"], javascript: ["js", "jsx"], typescript: ["ts", "tsx"], python: ["py"], xml: ["html"], yaml: ["yml"] });

export function textOf(node: Root | RootContent | ElementContent): string {
  if (node.type === "text") return node.value;
  if ("children" in node) return (node.children as (RootContent | ElementContent)[]).map(textOf).join("");
  return "";
}

function classes(node: Element): string[] {
  const value: unknown = node.properties?.className;
  return Array.isArray(value) ? value.map(String) : typeof value === "string" ? value.split(" ") : [];
}

function visit(node: Root | Element, parent: Root | Element | null) {
  if (node.type === "element" && node.tagName === "code" && parent?.type === "element" && parent.tagName === "pre") {
    const names = classes(node);
    const lang = names.find((n) => n.startsWith("language-"))?.slice("language-".length);
    node.properties = { ...node.properties, className: [...names, "hljs"] };
    if (lang && lowlight.registered(lang)) {
      try {
        const tree = lowlight.highlight(lang, textOf(node));
        node.children = tree.children as ElementContent[];
      } catch {
        /* leave it plain */
      }
    }
    return;
  }
  for (const child of node.children) if (child.type === "element") visit(child, node);
}

export default function rehypeLowlight() {
  return (tree: Root) => visit(tree, null);
}
