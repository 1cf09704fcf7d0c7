// Scanning the ticket's QR code with the phone's camera, where the browser can (the button shows
// only then): it needs BarcodeDetector and a camera, and both need a secure context (HTTPS, or
// the appliance opened as localhost). On the venue's plain-HTTP WiFi the phone's own camera app does it instead: the
// QR code's link (the appliance's address and `/?ticket=…`) opens the app with the code filled in.

import { strings } from "./strings.js";

const T = strings();
const EVERY_MS = 250;

/** Whether this browser can scan here. */
export function canScan() {
  return window.isSecureContext && "BarcodeDetector" in window && !!navigator.mediaDevices?.getUserMedia;
}

/** The ticket code a QR code carries: a link's `ticket` parameter, or the bare code. */
export function ticketFrom(text) {
  try {
    const code = new URL(text).searchParams.get("ticket");
    if (code) return code.trim();
  } catch {
    // Not a link: the code itself.
  }
  return text.trim();
}

/**
 * Shows the camera in `host` until a QR code is read (resolves with its ticket code) or the
 * person cancels or the camera cannot be used (resolves with "" and says why in `status`).
 */
export async function scanTicket(h, host, status) {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  } catch {
    status.textContent = T.cameraUnavailable;
    return "";
  }
  const video = h("video", { muted: true, playsinline: true, "aria-label": T.cameraView });
  video.srcObject = stream;
  let cancel;
  const cancelled = new Promise((done) => { cancel = done; });
  const panel = h("div", { class: "scanner" },
    h("p", { class: "help" }, T.scanHelp), video,
    h("button", { type: "button", class: "secondary", onclick: () => cancel("") }, T.cancel));
  host.replaceChildren(panel);
  const stop = () => {
    for (const track of stream.getTracks()) track.stop();
    panel.remove();
  };
  try {
    await video.play();
    const detector = new BarcodeDetector({ formats: ["qr_code"] });
    const found = (async () => {
      for (;;) {
        const codes = await detector.detect(video).catch(() => []);
        if (codes.length) return ticketFrom(codes[0].rawValue);
        await new Promise((next) => setTimeout(next, EVERY_MS));
      }
    })();
    return await Promise.race([found, cancelled]);
  } catch {
    status.textContent = T.cameraUnavailable;
    return "";
  } finally {
    stop();
  }
}
