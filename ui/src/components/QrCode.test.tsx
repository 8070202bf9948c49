import { describe, expect, it, vi, afterEach } from "vitest";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { create } from "qrcode";
import { qrDataUrl } from "./QrCode";
import { SecurityPage } from "../pages/account/SecurityPage";
import { tokens } from "../lib/api";
import { useSession } from "../store/session";
import type { User } from "../lib/types";

const URI = "otpauth://totp/Orchard:ann%40example.org?secret=JBSWY3DPEHPK3PXP&issuer=Orchard";

/** The dark modules an SVG of qrcode's renderer draws: its path is runs of `h` strokes
 * joined by absolute `M` and relative `m` moves, one row per half-pixel line. */
function darkModules(svg: string, margin: number): Set<string> {
  const d = /<path stroke="[^"]+" d="([^"]+)"/.exec(svg)![1];
  const dark = new Set<string>();
  let x = 0;
  let y = 0;
  for (const [, op, a, b] of d.matchAll(/([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?/g)) {
    if (op === "M") [x, y] = [Number(a), Number(b)];
    else if (op === "m") [x, y] = [x + Number(a), y + Number(b)];
    else for (let i = 0; i < Number(a); i++) dark.add(`${x++ - margin},${Math.floor(y) - margin}`);
  }
  return dark;
}

describe("qrDataUrl", () => {
  it("draws exactly the QR code of the text as an SVG data: URL", async () => {
    const url = await qrDataUrl(URI);
    expect(url.startsWith("data:image/svg+xml;charset=utf-8,")).toBe(true);
    const svg = decodeURIComponent(url.slice(url.indexOf(",") + 1));
    const { modules } = create(URI, { errorCorrectionLevel: "M" });
    expect(svg).toContain(`viewBox="0 0 ${modules.size + 4} ${modules.size + 4}"`);
    const expected = new Set<string>();
    for (let r = 0; r < modules.size; r++)
      for (let c = 0; c < modules.size; c++) if (modules.get(r, c)) expected.add(`${c},${r}`);
    expect(darkModules(svg, 2)).toEqual(expected);
    // a different secret is a different picture
    expect(await qrDataUrl(URI.replace("JBSW", "KBSW"))).not.toEqual(url);
  });
});

describe("SecurityPage", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("shows the QR code of the otpauth URI next to the secret", async () => {
    const user = { id: "u1", email: "ann@example.org", totp_enabled: false } as User;
    useSession.setState({ user, status: "ready" });
    tokens.set({ access_token: "a", refresh_token: "r" });
    vi.stubGlobal(
      "fetch",
      vi.fn(async (url: string, init: RequestInit = {}) =>
        url === "/api/v1/auth/totp/setup" && init.method === "POST"
          ? new Response(JSON.stringify({ secret: "JBSWY3DPEHPK3PXP", otpauth_uri: URI }), { status: 200 })
          : new Response("{}", { status: 404 }),
      ),
    );
    render(<SecurityPage />);
    await userEvent.click(screen.getByTestId("totp-setup"));
    const img = await screen.findByTestId("totp-qr");
    expect(img).toHaveAttribute("src", await qrDataUrl(URI));
    expect(img).toHaveAccessibleName(/QR code/);
    expect(screen.getByTestId("totp-secret")).toHaveTextContent("JBSWY3DPEHPK3PXP");
  });
});
