// Settings: provider API keys (add, replace, delete; a key is never shown back, only its
// fingerprint), the sign-in methods linked to the account (a code that links Telegram, buttons
// that link Google and GitHub),
// and the default model new agents get.

import { api } from "./api.js";
import { attempt, h, mount, notify } from "./ui.js";

const PROVIDERS = ["openai", "anthropic", "openrouter", "libertai", "custom"];
const OAUTH = { google: "Google", github: "GitHub" };

/** The settings page. */
export async function settingsView() {
  const error = h("p.error#settings-error", { role: "alert" });
  const keys = h("ul.keys#keys");

  const reload = async () => {
    const list = await api.get("/users/me/api-keys");
    keys.replaceChildren(...(list.length ? list.map((key) => h("li.card", { "data-key": key.id },
      h("div.row", {}, h("strong", {}, key.label || key.provider),
        h("span.badge", {}, key.provider), h("code.fingerprint", {}, key.fingerprint)),
      key.base_url ? h("p.muted", {}, key.base_url) : null,
      h("div.actions", {},
        h("button.replace", { type: "button", onclick: () => form.edit(key) }, "Replace"),
        h("button.delete", {
          type: "button",
          onclick: () => attempt(async () => { await api.del(`/users/me/api-keys/${key.id}`); await reload(); }, error),
        }, "Delete"))))
      : [h("li.muted", {}, "No keys: your agents use the platform's model.")]));
  };
  const form = keyForm(error, reload);

  const model = h("input#default-model", {
    value: localStorage.getItem("warren.model") || "", placeholder: "the platform's default",
  });
  const modelForm = h("form.card#model-form", {
    onsubmit: (event) => {
      event.preventDefault();
      localStorage.setItem("warren.model", model.value.trim());
      notify("Default model saved: new agents get it.", "info");
    },
  }, h("h2", {}, "Default model"),
  h("p.muted", {}, "The model new agents are created with (kept in this browser)."),
  model, h("button.primary", { type: "submit" }, "Save"));

  const connections = connectionsCard(error);
  mount(h("section", {}, h("h1", {}, "Settings"),
    h("h2", {}, "Provider keys"),
    h("p.muted", {}, "Your agents call their model with your newest key. Keys are stored encrypted and never shown again."),
    keys, form.el, error, connections.el, modelForm));
  await attempt(reload, error);
  await attempt(connections.reload, error);
}

/** The sign-in methods linked to the account, and linking Telegram by a one-time code. */
function connectionsCard(error) {
  const list = h("ul.keys#connections");
  const code = h("p#telegram-link", { hidden: true });
  const reload = async () => {
    const linked = await api.get("/users/me/connections");
    list.replaceChildren(...linked.map((c) => h("li.card", { "data-connection": c.id },
      h("div.row", {}, h("span.badge", {}, c.kind), h("code", {}, c.external_id)),
      h("div.actions", {}, h("button.unlink", {
        type: "button",
        onclick: () => attempt(async () => { await api.del(`/users/me/connections/${c.id}`); await reload(); }, error),
      }, "Unlink")))));
  };
  const link = h("button#link-telegram", {
    type: "button",
    onclick: () => attempt(async () => {
      const made = await api.post("/users/me/connections/telegram", {});
      code.replaceChildren("Send this to the platform's Telegram bot within ",
        String(Math.round(made.expires_in / 60)), " minutes: ", h("code#telegram-command", {}, made.command));
      code.hidden = false;
    }, error),
  }, "Link Telegram");
  // Google and GitHub, when the platform offers them: the provider sends the browser back to
  // /settings#linked=<provider>.
  const oauth = h("span#link-oauth");
  const offer = async () => {
    const { providers } = await api.public("/auth/providers");
    oauth.replaceChildren(...providers.filter((p) => OAUTH[p]).map((p) => h(`button#link-${p}`, {
      type: "button",
      onclick: () => attempt(async () => {
        const started = await api.post(`/users/me/connections/${p}`, {});
        location.assign(started.authorize_url);
      }, error),
    }, `Link ${OAUTH[p]}`)));
    const linked = new URLSearchParams(location.hash.slice(1)).get("linked");
    if (linked) {
      history.replaceState(null, "", "/settings");
      notify(`${OAUTH[linked] || linked} is linked: it signs you in to this account now.`, "info");
    }
  };
  const el = h("div.card#connections-card", {}, h("h2", {}, "Sign-in methods"),
    h("p.muted", {}, "Each of these signs you in to this account. The last one cannot be unlinked."),
    list, link, oauth, code);
  return { el, reload: async () => { await reload(); await offer(); } };
}

function keyForm(error, reload) {
  const title = h("h2", {}, "Add a key");
  const provider = h("select#key-provider", {}, PROVIDERS.map((p) => h("option", { value: p }, p)));
  const secret = h("input#key-secret", { type: "password", required: true, autocomplete: "off", placeholder: "sk-…" });
  const baseUrl = h("input#key-base-url", { type: "url", placeholder: "https://… (custom only)" });
  const label = h("input#key-label", { placeholder: "optional" });
  const el = h("form.card#key-form", {
    onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        const body = { provider: provider.value, api_key: secret.value };
        if (baseUrl.value.trim()) body.base_url = baseUrl.value.trim();
        if (label.value.trim()) body.label = label.value.trim();
        // The platform replaces the key of the same provider and label.
        await api.post("/users/me/api-keys", body);
        provider.disabled = label.disabled = false;
        title.textContent = "Add a key";
        secret.value = "";
        await reload();
      }, error);
    },
  }, title,
  h("label", { for: "key-provider" }, "Provider"), provider,
  h("label", { for: "key-secret" }, "API key"), secret,
  h("label", { for: "key-base-url" }, "Base URL"), baseUrl,
  h("label", { for: "key-label" }, "Label"), label,
  h("button.primary#save-key", { type: "submit" }, "Save key"));
  return {
    el,
    edit(key) {
      title.textContent = `Replace ${key.label || key.provider} (${key.fingerprint})`;
      provider.value = key.provider;
      baseUrl.value = key.base_url || "";
      label.value = key.label || "";
      provider.disabled = label.disabled = true;
      secret.focus();
    },
  };
}
