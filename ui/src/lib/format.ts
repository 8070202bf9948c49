/** "orchard-chat/3" → "orchard-chat v3"; other names as they are. */
export function formatModelVersion(version: string | null | undefined): string | null {
  if (!version) return null;
  const m = /^(.*?)[/:@]v?(\d+)$/.exec(version);
  return m ? `${m[1]} v${m[2]}` : version;
}

export function chatTitleFrom(text: string): string {
  const line = text.trim().split(/\r?\n/)[0].replace(/\s+/g, " ").trim();
  if (!line) return "New chat";
  return line.length > 60 ? `${line.slice(0, 57)}…` : line;
}

/** A file size for people: 980 B, 12.3 KB, 4.1 MB. */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1_000_000) return `${(bytes / 1000).toFixed(1)} KB`;
  return `${(bytes / 1_000_000).toFixed(1)} MB`;
}
