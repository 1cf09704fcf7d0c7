// The app's service worker: keeps the app's shell (the page and its files), so the app opens in
// a dead spot and shows the last state the page saved. API calls and the hub always go to the
// network: nothing the appliance answers is ever served stale from here.

// The server writes each file's version into these URLs, so any change makes a new cache.
const SHELL = [
  "/",
  "/kiosk",
  "/assets/app.css",
  "/assets/app.js",
  "/assets/chat.js",
  "/assets/console.css",
  "/assets/console.js",
  "/assets/hub.js",
  "/assets/kiosk.css",
  "/assets/kiosk.js",
  "/assets/mqtt.js",
  "/assets/names.js",
  "/assets/outbox.js",
  "/assets/page.js",
  "/assets/people.js",
  "/assets/saved.js",
  "/assets/scans.js",
  "/assets/signage.css",
  "/assets/signage.js",
  "/assets/scan.js",
  "/assets/strings.js",
  "/assets/icon.svg",
  "/assets/app.webmanifest",
];
const CACHE = `shell:${SHELL.join(",")}`;

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== location.origin) return;
  if (request.mode === "navigate") {
    // The network first (a new version of the page), the kept page (the app's, or the kiosk's)
    // when there is none.
    // A display's page (one per display, the same file) is kept when it loads.
    event.respondWith(fetch(request).then((page) => {
      if (page.ok && url.pathname.startsWith("/signage/")) {
        const copy = page.clone();
        caches.open(CACHE).then((cache) => cache.put(url.pathname, copy));
      }
      return page;
    }).catch(() => caches.match(url.pathname).then((page) => page || caches.match("/"))));
  } else if (url.pathname.startsWith("/assets/")) {
    // Versioned URLs never change; a module's import (unversioned) takes the kept version
    // only when the network is gone.
    event.respondWith(
      caches.match(request).then((hit) => hit ||
        fetch(request).catch(() => caches.match(request, { ignoreSearch: true }))),
    );
  }
});
