import { lazy, Suspense } from "react";
import { Navigate, NavLink, Route, Routes } from "react-router";
import { cn } from "../../lib/cn";
import { useSession } from "../../store/session";
import { Spinner } from "../../components/ui/misc";
import NotFound from "../NotFound";
import { ModelsPage } from "./ModelsPage";
import { UsersPage } from "./UsersPage";
import { AuditPage } from "./AuditPage";

// Lazy chunks: the analytics page brings Recharts.
const AnalyticsPage = lazy(() => import("./AnalyticsPage"));
const JobsPage = lazy(() => import("./JobsPage"));
const ErrorsPage = lazy(() => import("./ErrorsPage"));
const HealthPage = lazy(() => import("./HealthPage"));
const ConversationsPage = lazy(() => import("./ConversationsPage"));
const PlansPage = lazy(() => import("./PlansPage"));
const AccessPage = lazy(() => import("./AccessPage"));
const KnowledgeFlagsPage = lazy(() => import("./KnowledgeFlagsPage"));

const TABS = [
  ["models", "Models"],
  ["users", "Users"],
  ["plans", "Plans"],
  ["access", "Access"],
  ["analytics", "Analytics"],
  ["conversations", "Conversations"],
  ["knowledge", "Flagged files"],
  ["jobs", "Training jobs"],
  ["health", "Health"],
  ["errors", "Errors"],
  ["audit", "Audit log"],
] as const;

/** Admin pages. A non-admin sees "Admins only" and no admin API is called. */
export default function AdminRoutes() {
  const user = useSession((s) => s.user);
  if (user?.role !== "admin")
    return (
      <div className="mx-auto max-w-xl p-6">
        <div data-testid="forbidden" role="alert" className="rounded-lg border border-border p-6 text-center">
          <h1 className="text-lg font-semibold">Admins only</h1>
          <p className="mt-1 text-sm text-muted-foreground">This dashboard is for administrators.</p>
        </div>
      </div>
    );
  return (
    <div className="mx-auto max-w-6xl p-4 sm:p-6">
      <h1 className="mb-4 text-xl font-semibold">Admin</h1>
      <nav aria-label="Admin sections" className="mb-6 flex gap-1 overflow-x-auto border-b border-border">
        {TABS.map(([path, label]) => (
          <NavLink
            key={path}
            to={`/admin/${path}`}
            data-testid={`admin-tab-${path}`}
            className={({ isActive }) =>
              cn(
                "-mb-px shrink-0 border-b-2 px-3 py-2 text-sm",
                isActive ? "border-primary font-medium" : "border-transparent text-muted-foreground hover:text-foreground",
              )
            }
          >
            {label}
          </NavLink>
        ))}
      </nav>
      <Suspense fallback={<Spinner />}>
        <Routes>
          <Route index element={<Navigate to="/admin/models" replace />} />
          <Route path="models" element={<ModelsPage />} />
          <Route path="users" element={<UsersPage />} />
          <Route path="plans" element={<PlansPage />} />
          <Route path="access" element={<AccessPage />} />
          <Route path="analytics" element={<AnalyticsPage />} />
          <Route path="conversations/*" element={<ConversationsPage />} />
          <Route path="knowledge" element={<KnowledgeFlagsPage />} />
          <Route path="jobs" element={<JobsPage />} />
          <Route path="health" element={<HealthPage />} />
          <Route path="errors" element={<ErrorsPage />} />
          <Route path="audit" element={<AuditPage />} />
          <Route path="*" element={<NotFound />} />
        </Routes>
      </Suspense>
    </div>
  );
}
