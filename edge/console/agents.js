// Agents: the list with live status from the user-wide feed, creating one with its six
// deployment steps shown as they happen, and stop / start / restart / delete.

import { api } from "./api.js";
import { gateway } from "./gateway.js";
import { attempt, h, mount } from "./ui.js";

export const STEPS = ["allocating", "provisioning", "installing", "configuring", "starting", "health_check"];
const LABELS = {
  allocating: "Allocating", provisioning: "Provisioning", installing: "Installing",
  configuring: "Configuring", starting: "Starting", health_check: "Health check",
};

/** The agents page; returns its clean-up. */
export async function agentsView() {
  const list = h("ul.agents#agents");
  const cards = new Map(); // agent id -> card
  const error = h("p.error#agents-error", { role: "alert" });

  const early = new Map(); // agent id -> feed changes that came before its card

  const render = (agent) => {
    let card = cards.get(agent.id);
    if (card) {
      card.update(agent);
      return card;
    }
    card = agentCard(agent, error, () => cards.delete(agent.id));
    cards.set(agent.id, card);
    card.update(agent);
    list.prepend(card.el);
    for (const change of early.get(agent.id) || []) card.change(change);
    early.delete(agent.id);
    return card;
  };

  const reload = async () => {
    const agents = await api.get("/agents");
    for (const card of cards.values()) card.live = false;
    for (const agent of agents.reverse()) {
      const card = render(agent);
      if (agent.status === "deploying" || agent.status === "failed") card.loadSteps();
    }
  };

  // Changes to an agent without a card yet (one just created, here or in another tab) wait
  // for it, so none of its deployment steps is missed.
  const unlisten = gateway.on("feed", (frame) => {
    if (frame.type !== "agent") return;
    const card = cards.get(frame.id);
    if (card) return card.change(frame.change);
    if (!early.has(frame.id)) early.set(frame.id, []);
    early.get(frame.id).push(frame.change);
    if (frame.change.type === "created") api.get(`/agents/${frame.id}`).then(render, () => {});
  });
  // The feed is live only: after a (re)connection, subscribe and read the list again.
  const unhook = gateway.onOpen(() => {
    gateway.request("feed.subscribe").then(reload).catch((err) => { error.textContent = err.message; });
  });

  mount(
    h("section", {}, h("h1", {}, "Agents"), createForm(error, render), error, list),
  );
  await attempt(reload, error);
  return () => { unlisten(); unhook(); };
}

function createForm(error, render) {
  const name = h("input#agent-name", { required: true, maxLength: 64, placeholder: "Helper" });
  const prompt = h("textarea#agent-prompt", { rows: 2, placeholder: "You are a helpful assistant." });
  const model = h("input#agent-model", {
    placeholder: "platform default", value: localStorage.getItem("warren.model") || "",
  });
  return h("form.card#create-agent", {
    onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        const body = { name: name.value.trim() };
        if (prompt.value.trim()) body.system_prompt = prompt.value;
        if (model.value.trim()) body.model = model.value.trim();
        render(await api.post("/agents", body));
        name.value = "";
      }, error);
    },
  },
  h("h2", {}, "New agent"),
  h("label", { for: "agent-name" }, "Name"), name,
  h("label", { for: "agent-prompt" }, "System prompt"), prompt,
  h("label", { for: "agent-model" }, "Model"), model,
  h("button.primary#create", { type: "submit" }, "Create and deploy"));
}

function agentCard(agent, error, removed) {
  const status = h("span.badge.status");
  const name = h("a.name", { href: `/agents/${agent.id}` });
  const bar = h("div.bar", { role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 6 }, h("span"));
  const steps = h("ol.steps", {}, STEPS.map((step) => h("li", { "data-step": step }, LABELS[step])));
  const problem = h("p.error.agent-error");
  const progress = h("div.progress", { hidden: true }, bar, steps);
  const act = (verb, method = "post") => () => attempt(async () => {
    const updated = method === "del"
      ? await api.del(`/agents/${agent.id}`)
      : await api.post(`/agents/${agent.id}/${verb}`);
    if (method === "del") { el.remove(); removed(); } else if (updated) card.update(updated);
  }, error);
  const el = h("li.card.agent", { "data-agent": agent.id },
    h("div.row", {}, name, status),
    progress, problem,
    h("div.actions", {},
      h("a.button.open-chat", { href: `/agents/${agent.id}` }, "Chat"),
      h("button.stop", { type: "button", onclick: act("stop") }, "Stop"),
      h("button.start", { type: "button", onclick: act("start") }, "Start"),
      h("button.restart", { type: "button", onclick: act("restart") }, "Restart"),
      h("button.delete", {
        type: "button",
        onclick: () => confirm(`Delete ${agent.name}? Its workspace goes too.`) && act("", "del")(),
      }, "Delete")));

  const mark = (done, failed) => {
    progress.hidden = false;
    steps.querySelectorAll("li").forEach((li, i) => {
      li.classList.toggle("done", i < done);
      li.classList.toggle("failed", i === failed);
    });
    bar.firstChild.style.width = `${(done / 6) * 100}%`;
    bar.setAttribute("aria-valuenow", done);
  };
  const setStatus = (value) => {
    status.textContent = value;
    status.dataset.status = value;
    el.dataset.status = value;
  };

  const card = {
    el,
    live: false, // whether the feed said something newer than the list read
    update(view) {
      name.textContent = view.name;
      if (card.live) return;
      setStatus(view.status);
      problem.textContent = view.status === "failed" && view.last_error ? view.last_error : "";
    },
    async loadSteps() {
      const view = await api.get(`/agents/${agent.id}/status`).catch(() => null);
      if (!view || !view.step_number) return;
      const failed = view.status === "failed" ? view.step_number - 1 : undefined;
      mark(view.status === "failed" ? view.step_number - 1 : view.step_number, failed);
    },
    change(change) {
      card.live = true;
      switch (change.type) {
        case "deployment_requested": case "repair_requested": case "redeploy_requested":
          setStatus("deploying"); problem.textContent = ""; mark(0); break;
        case "deployment_step": mark(STEPS.indexOf(change.step) + 1); setStatus("deploying"); break;
        case "deployed": mark(6); setStatus("running"); break;
        case "deployment_failed":
          mark(STEPS.indexOf(change.step), STEPS.indexOf(change.step));
          setStatus("failed"); problem.textContent = change.message; break;
        case "failed": setStatus("failed"); problem.textContent = change.message; break;
        case "stopped": setStatus("stopped"); break;
        case "started": case "restarted": setStatus("running"); break;
        case "paused": setStatus("paused"); break;
        case "resumed": setStatus("running"); break;
        case "configured": name.textContent = change.name; break;
        case "deleted": case "destroyed": el.remove(); removed(); break;
        default: break;
      }
    },
  };
  return card;
}
