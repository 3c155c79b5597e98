// Chat with one agent over the gateway: sessions list, the transcript (history paged from the
// read model, then the log from a cursor), streamed tokens, tool calls with their output, queue
// position, cancel, "send now" (interrupt the running reply), and files uploaded to the agent's
// workspace.
//
// Nothing is lost or shown twice across a reload or a dropped connection: opening a session
// shows the stored messages up to a cursor and then follows the log from that cursor; a
// reconnection follows again after the last `seq` this tab saw.

import { accessToken, api } from "./api.js";
import { gateway } from "./gateway.js";
import { attempt, ago, go, h, mount, notify } from "./ui.js";

const PAGE = 20;

/** The chat page for `agentId`, on `sessionId` (or the agent's latest); returns its clean-up. */
export async function chatView(agentId, sessionId) {
  const agent = await api.get(`/agents/${agentId}`);
  const sessions = h("ul.sessions#sessions");
  const transcript = h("ol.transcript#transcript", { "aria-live": "polite" });
  const older = h("button.link#load-older", { type: "button", hidden: true }, "Load older messages");
  const queue = h("p.muted#queue");
  const error = h("p.error#chat-error", { role: "alert" });
  const input = h("textarea#message", { rows: 2, placeholder: `Message ${agent.name}…` });
  const send = h("button.primary#send", { type: "submit" }, "Send");
  const cancel = h("button#cancel", { type: "button", disabled: true }, "Cancel");
  const interrupt = h("button#interrupt", {
    type: "button", hidden: true, title: "Stop the running reply and send this message now",
  }, "Send now");
  const files = h("input#attach", { type: "file", multiple: true, hidden: true });
  const attach = h("button#attach-button", {
    type: "button", title: `Upload files to ${agent.name}'s workspace`, onclick: () => files.click(),
  }, "Attach");
  const uploaded = h("p.muted#uploaded", { "aria-live": "polite" });
  const menu = h("button.link#show-sessions", { type: "button" }, "Sessions");

  let session = null; // the followed session's id
  let floor = 0; // events at or below this seq were shown from the stored history
  let lastSeq = 0;
  let oldest = null; // id of the oldest message shown, for paging
  let buffer = null; // events that arrived while (re)opening a session
  const runs = new Map(); // run id -> its bubble

  const bubble = (runId) => {
    if (!runs.has(runId)) {
      const b = runBubble(runId, agentId);
      runs.set(runId, b);
      transcript.append(b.el);
    }
    return runs.get(runId);
  };
  const busy = () => {
    const active = [...runs.values()].some((b) => !b.ended);
    cancel.disabled = !active;
    interrupt.hidden = !active;
    if (!active) queue.textContent = "";
  };

  const showMessage = (m, where = "append") => {
    const el = m.role === "user"
      ? userBubble(m.content, m.seq, () => continueFrom(session, m.seq))
      : storedReply(m, agentId, () => continueFrom(session, m.seq));
    if (m.role !== "user" && m.runId) runs.set(m.runId, { el, ended: true });
    transcript[where](el);
  };

  const apply = (name, p) => {
    switch (name) {
      case "message":
        if (p.role === "assistant") transcript.append(storedReply({ content: p.content, seq: p.seq }, agentId));
        else transcript.append(userBubble(p.content, p.seq, () => continueFrom(session, p.seq)));
        break;
      case "queued":
        bubble(p.runId).setStatus(p.position > 0 ? `queued (position ${p.position})` : "queued");
        if (p.position > 0) queue.textContent = `Your message is queued at position ${p.position}.`;
        break;
      case "status": bubble(p.runId).setStatus(p.status.replaceAll("_", " ")); break;
      case "token": bubble(p.runId).append(p.content); break;
      case "tool_call": bubble(p.runId).toolCall(p.callId, p.toolName, p.arguments); break;
      case "tool_result": bubble(p.runId).toolResult(p.callId, p.result); break;
      case "file": bubble(p.runId).file(p.path, p.size); break;
      case "final":
        bubble(p.runId).finish(p.content);
        listSessions().catch(() => {}); // message counts and order changed
        break;
      case "cancelled": bubble(p.runId).fail(p.message, "cancelled"); break;
      case "error":
        if (p.runId) bubble(p.runId).fail(p.message, "failed");
        else error.textContent = p.message;
        break;
      case "reset":
        transcript.replaceChildren();
        runs.clear();
        for (const m of p.recentMessages) showMessage(m);
        break;
      case "history_cleared": transcript.replaceChildren(); runs.clear(); break;
      default: return;
    }
    busy();
    transcript.lastElementChild?.scrollIntoView({ block: "end" });
  };

  const unlisten = gateway.on("*", (name, p) => {
    if (!session || p.sessionId !== session || name === "feed") return;
    if (buffer) { buffer.push([name, p]); return; }
    if (p.seq != null) {
      if (p.seq <= floor) return;
      lastSeq = Math.max(lastSeq, p.seq);
    }
    apply(name, p);
  });

  /** Shows `id`'s stored messages up to the first run not yet answered, then follows the log
   * after them: the unanswered run's message, tokens and tools come from the log, once. */
  const open = async (id) => {
    buffer = [];
    session = id;
    try {
      const page = await gateway.request("sessions.history", { sessionId: id, limit: PAGE });
      const answered = new Set(page.messages.filter((m) => m.role !== "user").map((m) => m.runId));
      const unanswered = page.messages.find((m) => m.role === "user" && m.runId && !answered.has(m.runId));
      const cut = unanswered ? unanswered.seq - 1 : Math.max(0, ...page.messages.map((m) => m.seq));
      transcript.replaceChildren();
      runs.clear();
      for (const m of page.messages.filter((m) => m.seq <= cut)) showMessage(m);
      oldest = page.messages[0]?.id || null;
      older.hidden = !page.hasMore;
      floor = lastSeq = cut;
      await gateway.request("sessions.switch", { sessionId: id, after: cut });
      history.replaceState(null, "", `/agents/${agentId}?session=${id}`);
      highlight();
    } finally {
      const held = buffer || [];
      buffer = null;
      for (const [name, p] of held) {
        if (p.seq != null && p.seq <= floor) continue;
        if (p.seq != null) lastSeq = Math.max(lastSeq, p.seq);
        apply(name, p);
      }
      busy();
      transcript.lastElementChild?.scrollIntoView({ block: "end" });
    }
  };

  // After a dropped connection: follow again right after the last event shown.
  let first = true;
  const unhook = gateway.onOpen(() => {
    if (first) { first = false; return; }
    if (session) {
      floor = lastSeq;
      gateway.request("sessions.switch", { sessionId: session, after: lastSeq }).catch(() => {});
    }
  });

  const highlight = () => {
    for (const li of sessions.children) li.classList.toggle("current", li.dataset.session === session);
  };
  const listSessions = async () => {
    const page = await gateway.request("sessions.list", { limit: 100 });
    const mine = page.sessions.filter((s) => s.agentId === agentId);
    sessions.replaceChildren(...mine.map((s) => h("li", { "data-session": s.id },
      h("button.link", { type: "button", onclick: () => { document.body.classList.remove("show-sessions"); attempt(() => open(s.id), error); } },
        s.title || "Untitled", h("small", {}, ` ${s.messageCount} messages · ${ago(s.lastActivity)}`)))));
    highlight();
    return mine;
  };

  const newSession = async () => {
    const started = await gateway.request("sessions.new", { agentId });
    transcript.replaceChildren();
    runs.clear();
    session = started.sessionId;
    floor = lastSeq = 0;
    older.hidden = true;
    history.replaceState(null, "", `/agents/${agentId}?session=${session}`);
    await listSessions();
  };

  older.addEventListener("click", () => attempt(async () => {
    const page = await gateway.request("sessions.history", { sessionId: session, limit: PAGE, before: oldest });
    for (const m of [...page.messages].reverse()) showMessage(m, "prepend");
    oldest = page.messages[0]?.id || oldest;
    older.hidden = !page.hasMore;
  }, error));

  /** Sends the message: queued behind a running reply, or (`interrupt`) instead of it. */
  const submit = (mode = "queue") => attempt(async () => {
    const text = input.value;
    if (!text.trim()) return;
    if (!session) await newSession();
    await gateway.request("agent", { message: text, sessionId: session, mode });
    input.value = "";
    listSessions().catch(() => {});
  }, error);

  cancel.addEventListener("click", () => attempt(() => gateway.request("agent.cancel", { sessionId: session }), error));
  interrupt.addEventListener("click", () => submit("interrupt"));
  files.addEventListener("change", () => attempt(async () => {
    const chosen = [...files.files];
    files.value = "";
    for (const file of chosen) {
      uploaded.textContent = `Uploading ${file.name}…`;
      const saved = await upload(agentId, file).catch((err) => { uploaded.textContent = ""; throw err; });
      uploaded.textContent = `Uploaded ${saved.path} (${saved.size} bytes) to the workspace.`;
    }
  }, error));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); submit(); }
  });
  menu.addEventListener("click", () => document.body.classList.toggle("show-sessions"));

  mount(h("div.chat", {},
    h("aside.side", {},
      h("button#new-session", { type: "button", onclick: () => attempt(newSession, error) }, "New session"),
      sessions),
    h("section.conversation", {},
      h("header.chat-head", {}, menu, h("h1", {}, agent.name), h("span.badge.status", { "data-status": agent.status }, agent.status)),
      older, transcript, queue, uploaded, error,
      h("form.composer", { onsubmit: (event) => { event.preventDefault(); submit(); } },
        input, send, interrupt, cancel, attach, files))));

  const mine = await attempt(listSessions, error) || [];
  const start = sessionId || mine[0]?.id;
  if (start) await attempt(() => open(start), error);
  input.focus();
  return () => { unlisten(); unhook(); document.body.classList.remove("show-sessions"); };
}

function userBubble(text, seq, onContinue) {
  return h("li.msg.user", { "data-seq": seq ?? "" }, h("div.text", {}, text), continueButton(onContinue));
}

function continueButton(onContinue) {
  return onContinue
    ? h("button.link.continue", { type: "button", title: "Start a new session with the conversation up to here", onclick: onContinue }, "Continue from here")
    : null;
}

/** A finished reply from the stored history. */
function storedReply(m, agentId, onContinue) {
  const b = runBubble(m.runId, agentId);
  if (m.status && m.status !== "completed") b.fail(m.error ? m.error.message : m.status, m.status);
  else b.finish(m.content);
  b.el.dataset.seq = m.seq ?? "";
  if (onContinue) b.el.append(continueButton(onContinue));
  return b.el;
}

/** One run's reply as it streams: text, tool calls (collapsible, with the command and its
 * output) between the text they interrupt, files, and how it ended. */
function runBubble(runId, agentId) {
  const status = h("span.run-status");
  let current = h("div.text"); // the text segment tokens go to
  const el = h("li.msg.assistant", { "data-run": runId || "" }, status, current);
  const tools = new Map();
  let streamed = "";
  const b = {
    el,
    ended: false,
    setStatus(value) { status.textContent = value; },
    append(piece) {
      streamed += piece;
      current.textContent += piece;
      status.textContent = "";
    },
    toolCall(callId, name, args) {
      const command = name === "shell" && args && args.command ? args.command : JSON.stringify(args);
      const output = h("pre.output", {}, "running…");
      const call = h("details.tool", { "data-call": callId },
        h("summary", {}, h("code", {}, name), " ", h("span.command", {}, command)),
        h("pre.args", {}, JSON.stringify(args, null, 2)), output);
      tools.set(callId, { call, output });
      current = h("div.text");
      el.append(call, current);
    },
    toolResult(callId, result) {
      const tool = tools.get(callId);
      if (!tool) return;
      const content = result ? result.content : "";
      tool.output.textContent = typeof content === "string" ? content : JSON.stringify(content);
      tool.call.classList.toggle("failed", Boolean(result && result.success === false));
    },
    file(path, size) {
      el.append(h("p.file", {}, h("button.link", {
        type: "button",
        onclick: () => attempt(() => download(agentId, path)),
      }, `⬇ ${path}`), ` (${size} bytes)`));
    },
    finish(content) {
      b.ended = true;
      status.textContent = "";
      if (!streamed && content) current.textContent = content;
      el.classList.add("done");
    },
    fail(message, kind) {
      b.ended = true;
      status.textContent = "";
      el.classList.add(kind);
      el.append(h("p.run-error", {}, message));
    },
  };
  return b;
}

/** Uploads `file` to the top of the agent's workspace (`PUT /files/{agent}/{name}`, the raw
 * body); the platform's answer `{path, size}`. */
async function upload(agentId, file) {
  const response = await fetch(`/api/v1/files/${agentId}/${encodeURIComponent(file.name)}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${await accessToken()}`, "content-type": "application/octet-stream" },
    body: file,
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ? body.error.message : `upload failed (${response.status})`);
  return body;
}

async function download(agentId, path) {
  const response = await fetch(`/api/v1/files/${agentId}/${path.split("/").map(encodeURIComponent).join("/")}`, {
    headers: { authorization: `Bearer ${await accessToken()}` },
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error ? body.error.message : `download failed (${response.status})`);
  }
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: path.split("/").pop() });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** "Continue from here": a new session holding this one's history up to `seq` (the fork
 * endpoint; where the platform does not offer it yet, its error is shown). */
async function continueFrom(session, seq) {
  await attempt(async () => {
    const forked = await api.post(`/conversations/${session}/fork`, { after: seq });
    const id = forked.id || forked.conversation_id || forked.sessionId;
    const agent = forked.agent_id || location.pathname.split("/")[2];
    notify("Continued in a new session.", "info");
    go(`/agents/${agent}?session=${id}`);
  });
}
