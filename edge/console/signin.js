// Signing in: an address, then "check your mail" with a box for the 6-digit code; the emailed
// link lands on /auth/verify, which redeems its token. Google and GitHub buttons appear when
// the platform offers them: the provider sends the browser back to /auth/oauth, whose URL
// fragment holds a one-time handover code (or why it failed). A pending account is shown as such.

import { api, keep, forget } from "./api.js";
import { attempt, go, h, mount } from "./ui.js";

/** The address form, then the code form. */
export function signInView() {
  const error = h("p.error#signin-error", { role: "alert" });
  const email = h("input#email", {
    type: "email", required: true, autocomplete: "email", placeholder: "you@example.com",
  });
  const form = h("form.card#signin", {
    onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        await api.anonymous("/auth/login/email", { email: email.value });
        codeView(email.value);
      }, error);
    },
  },
  h("h1", {}, "Sign in to Warren"),
  h("label", { for: "email" }, "Email"),
  email,
  h("button.primary#send-link", { type: "submit" }, "Email me a sign-in link"),
  h("div.providers#oauth-providers"),
  error);
  mount(form);
  email.focus();
  offerProviders(form.querySelector("#oauth-providers"));
}

const PROVIDER_NAMES = { google: "Google", github: "GitHub" };

/** A button for each OAuth provider the platform offers (a plain link: the edge redirects). */
async function offerProviders(where) {
  let offered;
  try {
    offered = (await api.public("/auth/providers")).providers;
  } catch {
    return; // the email form still works
  }
  const buttons = offered.filter((p) => PROVIDER_NAMES[p]).map((p) =>
    h(`a.button#oauth-${p}`, { href: `/api/v1/auth/oauth/${p}`, "data-external": "" },
      `Continue with ${PROVIDER_NAMES[p]}`));
  if (buttons.length) where.replaceChildren(h("p.muted", {}, "or"), ...buttons);
}

const OAUTH_ERRORS = {
  oauth_denied: "The sign-in was cancelled at the provider.",
  invalid_state: "This sign-in expired or was started in another browser. Try again.",
  invalid_handover: "This sign-in expired or was already used. Try again.",
  invalid_id_token: "The provider's answer could not be verified. Try again.",
  oauth_exchange_failed: "The provider did not accept the sign-in. Try again.",
  identity_taken: "That account already signs in another Warren account.",
};

/** `/auth/oauth#handover=…` (or `#error=…`): the end of a Google or GitHub sign-in. */
export function oauthView() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  // The handover code must not stay in the address bar or the history.
  history.replaceState(null, "", "/auth/oauth");
  const error = h("p.error#oauth-error", { role: "alert" });
  mount(h("section.card", {}, h("h1", {}, "Signing you in…"), error,
    h("a", { href: "/" }, "Back to sign-in")));
  const handover = fragment.get("handover");
  if (!handover) {
    const code = fragment.get("error");
    error.textContent = OAUTH_ERRORS[code] || `The sign-in failed (${code || "no code"}). Try again.`;
    return;
  }
  attempt(async () => {
    keep(await api.anonymous("/auth/oauth/exchange", { handover }));
    goOn();
  }, error);
}

function codeView(address) {
  const error = h("p.error#code-error", { role: "alert" });
  const code = h("input#code", {
    inputMode: "numeric", autocomplete: "one-time-code", pattern: "[0-9]{6}", maxLength: 6,
    required: true, placeholder: "123456",
  });
  mount(h("form.card#code-form", {
    onsubmit: (event) => {
      event.preventDefault();
      attempt(() => redeem({ email: address, code: code.value.trim() }), error);
    },
  },
  h("h1", {}, "Check your mail"),
  h("p#check-mail", {}, `We sent a sign-in link and a 6-digit code to ${address}. `
    + "Open the link, or type the code here."),
  h("label", { for: "code" }, "Code"),
  code,
  h("button.primary#verify-code", { type: "submit" }, "Sign in"),
  h("button.link", { type: "button", onclick: signInView }, "Use another address"),
  error));
  code.focus();
}

/** `/auth/verify?token=…`: redeems the emailed link's token. */
export function verifyView() {
  const token = new URLSearchParams(location.search).get("token");
  const error = h("p.error#verify-error", { role: "alert" });
  mount(h("section.card", {}, h("h1", {}, "Signing you in…"), error,
    h("a", { href: "/" }, "Back to sign-in")));
  // The token must not stay in the address bar or the history.
  history.replaceState(null, "", "/auth/verify");
  if (!token) {
    error.textContent = "This link has no sign-in token. Ask for a new email.";
    return;
  }
  attempt(() => redeem({ token }), error);
}

async function redeem(body) {
  const signed = await api.anonymous("/auth/verify-magic-link", body);
  keep(signed);
  goOn();
}

/** After signing in: where the person was headed (a device approval), else home. */
function goOn() {
  const after = sessionStorage.getItem("warren.after");
  sessionStorage.removeItem("warren.after");
  go(after && after.startsWith("/") && !after.startsWith("//") ? after : "/");
}

/** A signed-in user whose account still waits for an admin (or was refused). */
export function pendingView(me) {
  const text = me.status === "pending"
    ? "Your account is waiting for an administrator's approval. You can use Warren as soon "
      + "as they approve it."
    : `Your account is ${me.status}${me.status_reason ? `: ${me.status_reason}` : "."}`;
  mount(h("section.card#pending", {},
    h("h1", {}, me.status === "pending" ? "Pending approval" : "No access"),
    h("p#pending-text", {}, text),
    h("button.primary#check-again", { type: "button", onclick: () => go("/") }, "Check again"),
    h("button.link", { type: "button", onclick: () => { forget(); go("/"); } }, "Sign out")));
}
