// The console's entry: picks the view for the current path, keeps the navigation in step with
// who is signed in, and signs out.

import { api, forget, signedIn } from "./api.js";
import { gateway } from "./gateway.js";
import { go, mount, notify, h } from "./ui.js";
import { signInView, verifyView, oauthView, pendingView } from "./signin.js";
import { agentsView } from "./agents.js";
import { chatView } from "./chat.js";
import { settingsView } from "./settings.js";
import { usageView } from "./usage.js";
import { adminView } from "./admin.js";
import { deviceView } from "./device.js";

let leave = null; // the current view's clean-up

async function route() {
  if (leave) leave();
  leave = null;
  notify("");
  const path = location.pathname;
  const nav = document.getElementById("nav");
  if (path === "/auth/verify") {
    nav.hidden = true;
    return verifyView();
  }
  if (path === "/auth/oauth") {
    nav.hidden = true;
    return oauthView();
  }
  if (!signedIn()) {
    nav.hidden = true;
    // Back here once signed in (a device waits for its approval).
    if (path === "/device") sessionStorage.setItem("warren.after", path + location.search);
    return signInView();
  }
  let me;
  try {
    me = await api.get("/users/me");
  } catch (err) {
    if (!signedIn()) return signInView();
    mount(h("p.error", {}, err.message));
    return;
  }
  nav.hidden = false;
  document.getElementById("nav-admin").hidden = me.role !== "admin";
  if (me.status !== "approved") return pendingView(me);
  const chat = path.match(/^\/agents\/([0-9a-f-]{36})$/);
  if (chat) leave = await chatView(chat[1], new URLSearchParams(location.search).get("session"));
  else if (path === "/settings") leave = await settingsView();
  else if (path === "/usage") leave = await usageView();
  else if (path === "/admin") leave = await adminView(me);
  else if (path === "/device") deviceView(me);
  else leave = await agentsView();
}

// Links inside the app navigate without reloading.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href^='/']:not([data-external])");
  if (!link || event.ctrlKey || event.metaKey || link.target) return;
  event.preventDefault();
  go(link.getAttribute("href"));
});

document.getElementById("sign-out").addEventListener("click", async () => {
  await api.post("/auth/logout").catch(() => {});
  forget();
  gateway.stop();
  location.assign("/");
});

window.addEventListener("warren:signed-out", () => {
  gateway.stop();
  if (location.pathname !== "/") go("/");
  else route();
});
// A failure no view caught is still said in words.
window.addEventListener("unhandledrejection", (event) => {
  notify(event.reason && event.reason.message ? event.reason.message : "Something went wrong.");
});
window.addEventListener("popstate", route);
route();
