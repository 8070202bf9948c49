import { useEffect, useRef } from "react";
import { useFocusTrap } from "../lib/focusTrap";
import { Navigate, Outlet, useLocation } from "react-router";
import { Menu } from "lucide-react";
import { tokens } from "../lib/api";
import { cn } from "../lib/cn";
import { useMediaQuery } from "../lib/useMediaQuery";
import { useSession } from "../store/session";
import { useUi } from "../store/ui";
import { Sidebar } from "./Sidebar";
import { ErrorBanner, Spinner } from "./ui/misc";
import { Button } from "./ui/button";

/** Signed-in pages: the sidebar (a drawer under 768 px) and the page. */
export function AppLayout() {
  const status = useSession((s) => s.status);
  const user = useSession((s) => s.user);
  const sessionError = useSession((s) => s.error);
  const open = useUi((s) => s.drawerOpen);
  const setDrawer = useUi((s) => s.setDrawer);
  const desktop = useMediaQuery("(min-width: 768px)");
  const location = useLocation();
  const asideRef = useRef<HTMLElement>(null);

  useEffect(() => setDrawer(false), [location.pathname, setDrawer]);
  useFocusTrap(asideRef, open && !desktop, () => setDrawer(false));

  if (!tokens.access && !tokens.refresh) return <Navigate to="/login" replace state={{ from: location.pathname }} />;
  if (status === "error")
    return (
      <div className="grid h-dvh place-items-center p-4">
        <div className="max-w-md space-y-3">
          <ErrorBanner message={`Could not load your account: ${sessionError}`} />
          <Button onClick={() => void useSession.getState().loadMe()}>Try again</Button>
        </div>
      </div>
    );
  if (status === "loading")
    return (
      <div className="grid h-dvh place-items-center">
        <Spinner />
      </div>
    );
  if (!user) return <Navigate to="/login" replace />;

  const hiddenDrawer = !desktop && !open;
  return (
    <div className="flex h-dvh w-full overflow-hidden">
      {!desktop && open && (
        <div className="fixed inset-0 z-30 bg-black/50" aria-hidden onClick={() => setDrawer(false)} />
      )}
      <aside
        ref={asideRef}
        data-testid="sidebar"
        aria-label="Sidebar"
        inert={hiddenDrawer || undefined}
        className={cn(
          "z-40 flex w-72 shrink-0 flex-col border-r border-border bg-sidebar",
          desktop ? "relative" : "fixed inset-y-0 left-0 max-w-[85vw] transition-transform duration-200",
          hiddenDrawer ? "-translate-x-full" : "translate-x-0",
        )}
        {...(!desktop && open ? { role: "dialog", "aria-modal": true } : {})}
      >
        <Sidebar />
      </aside>
      <div className="flex min-w-0 flex-1 flex-col">
        {!desktop && (
          <header className="flex items-center gap-2 border-b border-border px-3 py-2">
            <button
              type="button"
              aria-label="Open menu"
              aria-expanded={open}
              data-testid="open-sidebar"
              className="rounded p-1.5 hover:bg-accent"
              onClick={() => setDrawer(true)}
            >
              <Menu className="size-5" aria-hidden />
            </button>
            <span className="font-semibold">Orchard</span>
          </header>
        )}
        <main className="min-h-0 flex-1 overflow-y-auto">
          <Outlet />
        </main>
      </div>
    </div>
  );
}
