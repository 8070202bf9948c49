import { useEffect, useMemo, useState } from "react";
import { Link, NavLink, useNavigate, useParams } from "react-router";
import * as Menu from "@radix-ui/react-dropdown-menu";
import {
  ChevronDown,
  ChevronRight,
  Folder as FolderIcon,
  FolderPlus,
  Library,
  LogOut,
  Moon,
  MoreHorizontal,
  Pin,
  Plus,
  Search,
  Settings,
  Shield,
  Sun,
  User as UserIcon,
  X,
} from "lucide-react";
import { FOLDER_NAME_MAX } from "../api/limits";
import { client, describeError, saveDownload, unwrap } from "../lib/api";
import { cn } from "../lib/cn";
import { groupByDate } from "../lib/dates";
import type { Chat, Folder, SearchHit } from "../lib/types";
import { useFeature } from "../store/access";
import { useChats } from "../store/chats";
import { useSession } from "../store/session";
import { useTheme } from "../store/theme";
import { toast } from "../store/toasts";
import { useUi } from "../store/ui";
import { MoveDialog, NameDialog, ShareDialog } from "./ChatDialogs";
import { Button } from "./ui/button";
import { Input } from "./ui/input";

function exportChat(chatId: string, format: "markdown" | "json", fallbackName: string) {
  return saveDownload(
    client.GET("/api/v1/chats/{chat_id}/export", { params: { path: { chat_id: chatId }, query: { format } }, parseAs: "blob" }),
    fallbackName,
  );
}

const menuItem =
  "flex cursor-pointer select-none items-center gap-2 rounded px-2 py-1.5 text-sm outline-none data-[highlighted]:bg-accent";

function ChatItem({ chat, snippet }: { chat: Chat; snippet?: string }) {
  const { chatId } = useParams();
  const navigate = useNavigate();
  const update = useChats((s) => s.update);
  const remove = useChats((s) => s.remove);
  const setDrawer = useUi((s) => s.setDrawer);
  const [dialog, setDialog] = useState<null | "rename" | "move" | "share">(null);
  const shares = useFeature("shares"); // off: the server refuses share links (403)
  const active = chatId === chat.id;

  const run = (fn: () => Promise<unknown>) => () => {
    fn().catch((e) => toast(describeError(e), "error"));
  };

  return (
    <li className="group relative">
      <Link
        to={`/c/${chat.id}`}
        data-testid="chat-item"
        aria-current={active ? "page" : undefined}
        onClick={() => setDrawer(false)}
        className={cn(
          "block rounded-md py-1.5 pr-9 pl-2 text-sm hover:bg-accent",
          active && "bg-accent font-medium",
        )}
        title={chat.title}
      >
        <span className="flex items-center gap-1">
          {chat.pinned && <Pin className="size-3 shrink-0 text-muted-foreground" aria-label="Pinned" />}
          <span className="truncate">{chat.title}</span>
        </span>
        {snippet && snippet !== chat.title && (
          <span className="block truncate text-xs text-muted-foreground">{snippet}</span>
        )}
      </Link>
      <Menu.Root>
        <Menu.Trigger asChild>
          <button
            type="button"
            aria-label={`Actions for ${chat.title}`}
            data-testid="chat-menu"
            className="absolute top-1 right-1 rounded p-1 text-muted-foreground hover:bg-background focus-visible:outline-2 focus-visible:outline-ring"
          >
            <MoreHorizontal className="size-4" aria-hidden />
          </button>
        </Menu.Trigger>
        <Menu.Portal>
          <Menu.Content align="end" className="z-50 min-w-44 rounded-md border border-border bg-card p-1 shadow-lg">
            <Menu.Item className={menuItem} onSelect={() => setDialog("rename")} data-testid="chat-rename">
              Rename
            </Menu.Item>
            <Menu.Item className={menuItem} onSelect={run(() => update(chat.id, { pinned: !chat.pinned }))} data-testid="chat-pin">
              {chat.pinned ? "Unpin" : "Pin"}
            </Menu.Item>
            <Menu.Item className={menuItem} onSelect={() => setDialog("move")} data-testid="chat-move">
              Move to folder…
            </Menu.Item>
            {shares && (
              <Menu.Item className={menuItem} onSelect={() => setDialog("share")} data-testid="chat-share">
                Share link…
              </Menu.Item>
            )}
            <Menu.Separator className="my-1 h-px bg-border" />
            <Menu.Item
              className={menuItem}
              data-testid="chat-export-markdown"
              onSelect={run(() => exportChat(chat.id, "markdown", `chat-${chat.id}.md`))}
            >
              Export Markdown
            </Menu.Item>
            <Menu.Item
              className={menuItem}
              data-testid="chat-export-json"
              onSelect={run(() => exportChat(chat.id, "json", `chat-${chat.id}.json`))}
            >
              Export JSON
            </Menu.Item>
            <Menu.Separator className="my-1 h-px bg-border" />
            <Menu.Item
              className={cn(menuItem, "text-destructive")}
              data-testid="chat-delete"
              onSelect={() => remove(chat.id, () => active && navigate("/"))}
            >
              Delete
            </Menu.Item>
          </Menu.Content>
        </Menu.Portal>
      </Menu.Root>
      <NameDialog
        open={dialog === "rename"}
        onOpenChange={(o) => setDialog(o ? "rename" : null)}
        title="Rename chat"
        label="Title"
        initial={chat.title}
        onSave={async (title) => void (await update(chat.id, { title }))}
      />
      <MoveDialog chat={chat} open={dialog === "move"} onOpenChange={(o) => setDialog(o ? "move" : null)} />
      <ShareDialog chat={chat} open={shares && dialog === "share"} onOpenChange={(o) => setDialog(o ? "share" : null)} />
    </li>
  );
}

function Group({ label, chats }: { label: string; chats: Chat[] }) {
  return (
    <section aria-label={label} className="mb-3">
      <h3 className="px-2 pb-1 text-xs font-semibold tracking-wide text-muted-foreground uppercase">{label}</h3>
      <ul className="space-y-0.5">
        {chats.map((c) => (
          <ChatItem key={c.id} chat={c} />
        ))}
      </ul>
    </section>
  );
}

function FolderGroup({ folder, chats }: { folder: Folder; chats: Chat[] }) {
  const [open, setOpen] = useState(true);
  const [dialog, setDialog] = useState(false);
  const renameFolder = useChats((s) => s.renameFolder);
  const deleteFolder = useChats((s) => s.deleteFolder);
  return (
    <section className="mb-1" aria-label={`Folder ${folder.name}`} data-testid="folder">
      <div className="group flex items-center">
        <button
          type="button"
          aria-expanded={open}
          onClick={() => setOpen(!open)}
          className="flex min-w-0 flex-1 items-center gap-1 rounded-md px-2 py-1.5 text-sm hover:bg-accent"
        >
          {open ? <ChevronDown className="size-3.5" aria-hidden /> : <ChevronRight className="size-3.5" aria-hidden />}
          <FolderIcon className="size-3.5 shrink-0" aria-hidden />
          <span className="truncate">{folder.name}</span>
          <span className="ml-auto text-xs text-muted-foreground">{chats.length}</span>
        </button>
        <Menu.Root>
          <Menu.Trigger asChild>
            <button type="button" aria-label={`Actions for folder ${folder.name}`} className="rounded p-1 text-muted-foreground hover:bg-accent">
              <MoreHorizontal className="size-4" aria-hidden />
            </button>
          </Menu.Trigger>
          <Menu.Portal>
            <Menu.Content align="end" className="z-50 min-w-40 rounded-md border border-border bg-card p-1 shadow-lg">
              <Menu.Item className={menuItem} onSelect={() => setDialog(true)}>
                Rename folder
              </Menu.Item>
              <Menu.Item
                className={cn(menuItem, "text-destructive")}
                onSelect={() => deleteFolder(folder.id).catch((e) => toast(describeError(e), "error"))}
              >
                Delete folder (keeps chats)
              </Menu.Item>
            </Menu.Content>
          </Menu.Portal>
        </Menu.Root>
      </div>
      {open && (
        <ul className="ml-3 space-y-0.5 border-l border-border pl-1">
          {chats.length === 0 && <li className="px-2 py-1 text-xs text-muted-foreground">Empty</li>}
          {chats.map((c) => (
            <ChatItem key={c.id} chat={c} />
          ))}
        </ul>
      )}
      <NameDialog
        open={dialog}
        onOpenChange={setDialog}
        title="Rename folder"
        label="Name"
        initial={folder.name}
        max={FOLDER_NAME_MAX}
        onSave={(name) => renameFolder(folder.id, name)}
      />
    </section>
  );
}

function SearchResults({ q }: { q: string }) {
  const [hits, setHits] = useState<SearchHit[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const hidden = useChats((s) => s.pendingDelete);
  useEffect(() => {
    let live = true;
    setError(null);
    const t = setTimeout(() => {
      unwrap(client.GET("/api/v1/chats/search", { params: { query: { q } } }))
        .then((h) => live && setHits(h))
        .catch((e) => live && setError(describeError(e)));
    }, 250);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [q]);
  if (error) return <p className="px-2 text-sm text-destructive">{error}</p>;
  if (!hits) return <p className="px-2 text-sm text-muted-foreground">Searching…</p>;
  const shown = hits.filter((h) => !hidden.includes(h.chat.id));
  if (!shown.length) return <p className="px-2 text-sm text-muted-foreground">No chats match “{q}”.</p>;
  return (
    <section aria-label="Search results">
      <ul className="space-y-0.5">
        {shown.map((h) => (
          <ChatItem key={h.chat.id} chat={h.chat} snippet={h.snippet} />
        ))}
      </ul>
    </section>
  );
}

export function Sidebar() {
  const chats = useChats((s) => s.chats);
  const folders = useChats((s) => s.folders);
  const hidden = useChats((s) => s.pendingDelete);
  const loaded = useChats((s) => s.loaded);
  const load = useChats((s) => s.load);
  const createFolder = useChats((s) => s.createFolder);
  const user = useSession((s) => s.user);
  const credits = useSession((s) => s.credits);
  const logout = useSession((s) => s.logout);
  const theme = useTheme((s) => s.theme);
  const toggleTheme = useTheme((s) => s.toggle);
  const setDrawer = useUi((s) => s.setDrawer);
  const navigate = useNavigate();
  const [q, setQ] = useState("");
  const [folderDialog, setFolderDialog] = useState(false);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    load().catch((e) => setError(describeError(e)));
  }, [load]);

  const visible = useMemo(() => chats.filter((c) => !hidden.includes(c.id)), [chats, hidden]);
  const pinned = visible.filter((c) => c.pinned);
  const folderIds = new Set(folders.map((f) => f.id));
  const loose = visible.filter((c) => !c.pinned && !(c.folder_id && folderIds.has(c.folder_id)));
  const navLink = ({ isActive }: { isActive: boolean }) =>
    cn("flex items-center gap-2 rounded-md px-2 py-1.5 text-sm hover:bg-accent", isActive && "bg-accent font-medium");

  return (
    <div className="flex h-full flex-col">
      <div className="flex items-center gap-2 p-3">
        <Link to="/" className="flex items-center gap-2 font-semibold" onClick={() => setDrawer(false)}>
          <img src="/icons/icon.svg" alt="" className="size-6" />
          Orchard
        </Link>
        <Button
          className="ml-auto"
          size="sm"
          data-testid="new-chat"
          onClick={() => {
            setDrawer(false);
            navigate("/");
          }}
        >
          <Plus className="size-4" aria-hidden /> New chat
        </Button>
        <button
          type="button"
          aria-label="Close menu"
          className="rounded p-1 hover:bg-accent md:hidden"
          onClick={() => setDrawer(false)}
        >
          <X className="size-4" aria-hidden />
        </button>
      </div>
      <div className="px-3 pb-2">
        <div className="relative">
          <Search className="pointer-events-none absolute top-2.5 left-2.5 size-4 text-muted-foreground" aria-hidden />
          <Input
            type="search"
            aria-label="Search chats"
            placeholder="Search chats"
            className="pl-8"
            data-testid="chat-search"
            value={q}
            onChange={(e) => setQ(e.target.value)}
            onKeyDown={(e) => e.key === "Escape" && q && (e.stopPropagation(), setQ(""))}
          />
        </div>
      </div>
      <nav aria-label="Chats" className="min-h-0 flex-1 overflow-y-auto px-2 pb-2">
        {error && <p className="px-2 text-sm text-destructive">{error}</p>}
        {q.trim() ? (
          <SearchResults q={q.trim()} />
        ) : (
          <>
            {loaded && visible.length === 0 && (
              <p className="px-2 py-2 text-sm text-muted-foreground">No chats yet. Say hello below.</p>
            )}
            {pinned.length > 0 && <Group label="Pinned" chats={pinned} />}
            <section className="mb-3" aria-label="Folders">
              <div className="flex items-center justify-between px-2 pb-1">
                <h3 className="text-xs font-semibold tracking-wide text-muted-foreground uppercase">Folders</h3>
                <button
                  type="button"
                  aria-label="New folder"
                  data-testid="new-folder"
                  className="rounded p-1 text-muted-foreground hover:bg-accent"
                  onClick={() => setFolderDialog(true)}
                >
                  <FolderPlus className="size-4" aria-hidden />
                </button>
              </div>
              {folders.map((f) => (
                <FolderGroup key={f.id} folder={f} chats={visible.filter((c) => !c.pinned && c.folder_id === f.id)} />
              ))}
            </section>
            {groupByDate(loose).map(([label, list]) => (
              <Group key={label} label={label} chats={list} />
            ))}
          </>
        )}
      </nav>
      <div className="space-y-1 border-t border-border p-2">
        <div className="flex items-center justify-between px-2 py-1 text-sm">
          <span className="text-muted-foreground">Credits</span>
          <span data-testid="credits" className="font-mono font-medium">
            {credits ?? "…"}
          </span>
        </div>
        <NavLink to="/knowledge" className={navLink} onClick={() => setDrawer(false)} data-testid="nav-knowledge">
          <Library className="size-4" aria-hidden /> Knowledge
        </NavLink>
        <NavLink to="/settings" className={navLink} onClick={() => setDrawer(false)} data-testid="nav-settings">
          <Settings className="size-4" aria-hidden /> Settings
        </NavLink>
        <NavLink to="/account" className={navLink} onClick={() => setDrawer(false)} data-testid="nav-account">
          <UserIcon className="size-4" aria-hidden /> {user?.display_name || user?.email || "Account"}
        </NavLink>
        {user?.role === "admin" && (
          <NavLink to="/admin" className={navLink} onClick={() => setDrawer(false)} data-testid="nav-admin">
            <Shield className="size-4" aria-hidden /> Admin
          </NavLink>
        )}
        <div className="flex gap-1">
          <Button
            variant="ghost"
            size="sm"
            className="flex-1 justify-start"
            data-testid="theme-toggle"
            aria-label={theme === "dark" ? "Switch to light theme" : "Switch to dark theme"}
            aria-pressed={theme === "dark"}
            onClick={toggleTheme}
          >
            {theme === "dark" ? <Sun className="size-4" aria-hidden /> : <Moon className="size-4" aria-hidden />}
            {theme === "dark" ? "Light" : "Dark"}
          </Button>
          <Button
            variant="ghost"
            size="sm"
            className="flex-1 justify-start"
            data-testid="logout"
            onClick={async () => {
              await logout();
              navigate("/login");
            }}
          >
            <LogOut className="size-4" aria-hidden /> Log out
          </Button>
        </div>
      </div>
      <NameDialog
        open={folderDialog}
        onOpenChange={setFolderDialog}
        title="New folder"
        label="Name"
        initial=""
        max={FOLDER_NAME_MAX}
        onSave={(name) => createFolder(name)}
      />
    </div>
  );
}
