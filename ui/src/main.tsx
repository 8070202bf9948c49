import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import App from "./App";
import { applyTheme, useTheme } from "./store/theme";
import "./index.css";
import { registerServiceWorker } from "./lib/registerSw";

applyTheme(useTheme.getState().theme);
registerServiceWorker();

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
