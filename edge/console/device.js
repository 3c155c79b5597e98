// `/device?code=…`: a device (the CLI's `warren login --browser`) asks to sign in to this
// account; the person checks that the code matches the one the device shows, and approves.

import { api } from "./api.js";
import { attempt, h, mount } from "./ui.js";

/** The approval form (the person is signed in). */
export function deviceView(me) {
  const error = h("p.error#device-error", { role: "alert" });
  const code = h("input#device-code", {
    value: new URLSearchParams(location.search).get("code") || "", required: true,
    autocomplete: "off", placeholder: "BCDF-GHJK", maxLength: 9,
  });
  const form = h("form.card#device-form", {
    onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        await api.post("/auth/device/approve", { user_code: code.value.trim() });
        mount(h("section.card#device-done", {}, h("h1", {}, "Device signed in"),
          h("p", {}, "The device is signed in to your account. You can close this page.")));
      }, error);
    },
  },
  h("h1", {}, "Sign in a device"),
  h("p#device-text", {}, `A device asks to sign in to Warren as ${me.email || me.display_name || "you"}. `
    + "Approve only if it shows this code and you started it."),
  h("label", { for: "device-code" }, "Code"), code,
  h("button.primary#approve-device", { type: "submit" }, "Approve"),
  error);
  mount(form);
}
