// Admin: users waiting for approval (approve / reject), and every user with their role.

import { api } from "./api.js";
import { attempt, h, mount } from "./ui.js";

const ROLES = ["guest", "user", "admin"];

/** The admin page (the nav shows it to admins; the API refuses everyone else). */
export async function adminView(me) {
  const error = h("p.error#admin-error", { role: "alert" });
  const pending = h("ul.users#pending-users");
  const everyone = h("ul.users#all-users");

  const reload = async () => {
    const [waiting, users] = await Promise.all([
      api.get("/admin/users?status=pending"), api.get("/admin/users?status=all"),
    ]);
    pending.replaceChildren(...(waiting.length
      ? waiting.map((user) => h("li.card", { "data-user": user.id, "data-email": user.email || "" },
        h("div.row", {}, h("strong", {}, user.email || user.display_name || user.id)),
        h("div.actions", {},
          h("button.primary.approve", {
            type: "button",
            onclick: () => attempt(async () => { await api.post(`/admin/users/${user.id}/approve`); await reload(); }, error),
          }, "Approve"),
          h("button.reject", {
            type: "button",
            onclick: () => attempt(async () => { await api.post(`/admin/users/${user.id}/reject`, {}); await reload(); }, error),
          }, "Reject"))))
      : [h("li.muted", {}, "Nobody is waiting.")]));
    everyone.replaceChildren(...users.map((user) => h("li.card", { "data-user": user.id },
      h("div.row", {}, h("strong", {}, user.email || user.id),
        h("span.badge", { "data-status": user.status }, user.status),
        roleSelect(user, me, error, reload)))));
  };

  mount(h("section", {}, h("h1", {}, "Admin"),
    h("h2", {}, "Waiting for approval"), pending, error,
    h("h2", {}, "Users"), everyone));
  await attempt(reload, error);
}

function roleSelect(user, me, error, reload) {
  const select = h("select.role", {
    disabled: user.id === me.id,
    "aria-label": `role of ${user.email || user.id}`,
    onchange: () => attempt(async () => {
      await api.patch(`/admin/users/${user.id}`, { role: select.value });
      await reload();
    }, error),
  }, ROLES.map((role) => h("option", { value: role, selected: role === user.role }, role)));
  return select;
}
