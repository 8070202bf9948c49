import { useEffect, useState } from "react";
import { Spinner } from "./ui/misc";

/** An SVG data: URL of `text` as a QR code. The encoder is loaded on first use (only the
 * 2FA set-up needs it); SVG rather than a canvas so the image scales crisply and the CSP's
 * `img-src data:` is all it needs. */
export async function qrDataUrl(text: string): Promise<string> {
  const { toString } = await import("qrcode");
  const svg = await toString(text, { type: "svg", errorCorrectionLevel: "M", margin: 2 });
  return `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
}

export function QrCode({ text, label, className }: { text: string; label: string; className?: string }) {
  const [url, setUrl] = useState<string | null>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let live = true;
    setUrl(null);
    setFailed(false);
    qrDataUrl(text).then(
      (u) => live && setUrl(u),
      () => live && setFailed(true),
    );
    return () => {
      live = false;
    };
  }, [text]);
  if (failed) return <p className="text-sm text-muted-foreground">The QR code could not be drawn: use the secret instead.</p>;
  if (!url) return <Spinner label="Drawing the QR code" />;
  // a white tile whatever the theme: scanners want dark modules on a light background
  return <img src={url} alt={label} data-testid="totp-qr" className={className ?? "size-44 rounded bg-white p-1"} />;
}
