import { lazy, Suspense, useEffect, type ReactNode } from "react";
import { BrowserRouter, Navigate, Route, Routes, useNavigate } from "react-router";
import { setAuthLostHandler } from "./lib/api";
import { AppLayout } from "./components/Layout";
import { Toaster } from "./components/ui/toaster";
import { Spinner } from "./components/ui/misc";
import ChatPage from "./pages/ChatPage";
import { LoginPage, RegisterPage } from "./pages/AuthPages";
import NotFound from "./pages/NotFound";
import { useSession } from "./store/session";
import { preloadMarkdown } from "./components/LazyMarkdown";

const OAuthCallbackPage = lazy(() => import("./pages/OAuthCallbackPage"));
const SharedPage = lazy(() => import("./pages/SharedPage"));
const SettingsPage = lazy(() => import("./pages/SettingsPage"));
const AccountRoutes = lazy(() => import("./pages/account/AccountRoutes"));
const AdminRoutes = lazy(() => import("./pages/admin/AdminRoutes"));
const KnowledgePage = lazy(() => import("./pages/KnowledgePage"));

function Lazy({ children }: { children: ReactNode }) {
  return (
    <Suspense
      fallback={
        <div className="p-6">
          <Spinner />
        </div>
      }
    >
      {children}
    </Suspense>
  );
}

function AuthBridge() {
  const navigate = useNavigate();
  useEffect(() => {
    setAuthLostHandler(() => {
      useSession.getState().reset();
      navigate("/login", { replace: true });
    });
    void useSession.getState().loadMe();
    preloadMarkdown();
  }, [navigate]);
  return null;
}

export default function App() {
  return (
    <BrowserRouter>
      <AuthBridge />
      <Routes>
        <Route path="/login" element={<LoginPage />} />
        <Route path="/register" element={<RegisterPage />} />
        <Route path="/oauth/callback" element={<Lazy><OAuthCallbackPage /></Lazy>} />
        <Route path="/shared/:token" element={<Lazy><SharedPage /></Lazy>} />
        <Route element={<AppLayout />}>
          <Route index element={<ChatPage />} />
          <Route path="c/:chatId" element={<ChatPage />} />
          <Route path="settings" element={<Lazy><SettingsPage /></Lazy>} />
          <Route path="knowledge" element={<Lazy><KnowledgePage /></Lazy>} />
          <Route path="account/*" element={<Lazy><AccountRoutes /></Lazy>} />
          <Route path="admin/*" element={<Lazy><AdminRoutes /></Lazy>} />
          <Route path="chat" element={<Navigate to="/" replace />} />
          <Route path="*" element={<NotFound />} />
        </Route>
      </Routes>
      <Toaster />
    </BrowserRouter>
  );
}
