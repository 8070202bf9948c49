import { lazy, Suspense } from "react";
import { NavLink, Route, Routes } from "react-router";
import { cn } from "../../lib/cn";
import { Spinner } from "../../components/ui/misc";
import NotFound from "../NotFound";
import { ProfilePage } from "./ProfilePage";
import { SecurityPage } from "./SecurityPage";
import { CreditsPage } from "./CreditsPage";
import { ApiKeysPage } from "./ApiKeysPage";
import { DataPage } from "./DataPage";

// Recharts is the biggest dependency: only the usage page loads it.
const UsagePage = lazy(() => import("./UsagePage"));

const TABS = [
  ["", "Profile"],
  ["security", "Security"],
  ["credits", "Credits"],
  ["usage", "Usage"],
  ["api-keys", "API keys"],
  ["data", "Your data"],
] as const;

export default function AccountRoutes() {
  return (
    <div className="mx-auto max-w-4xl p-4 sm:p-6">
      <h1 className="mb-4 text-xl font-semibold">Account</h1>
      <nav aria-label="Account sections" className="mb-6 flex gap-1 overflow-x-auto border-b border-border">
        {TABS.map(([path, label]) => (
          <NavLink
            key={path}
            to={`/account${path ? `/${path}` : ""}`}
            end
            data-testid={`account-tab-${path || "profile"}`}
            className={({ isActive }) =>
              cn(
                "-mb-px shrink-0 border-b-2 px-3 py-2 text-sm whitespace-nowrap",
                isActive ? "border-primary font-medium" : "border-transparent text-muted-foreground hover:text-foreground",
              )
            }
          >
            {label}
          </NavLink>
        ))}
      </nav>
      <Routes>
        <Route index element={<ProfilePage />} />
        <Route path="security" element={<SecurityPage />} />
        <Route path="credits" element={<CreditsPage />} />
        <Route
          path="usage"
          element={
            <Suspense fallback={<Spinner />}>
              <UsagePage />
            </Suspense>
          }
        />
        <Route path="api-keys" element={<ApiKeysPage />} />
        <Route path="data" element={<DataPage />} />
        <Route path="*" element={<NotFound />} />
      </Routes>
    </div>
  );
}
