// Small DOM helpers: build elements, show errors as text, navigate without reloading.

/** `h("button.primary#send", {onclick}, "Send")`: an element with classes, an id, properties
 * (`on…` become listeners, `data-…` and `aria-…` attributes) and children (strings are text). */
export function h(spec, props = {}, ...children) {
  const [tag, ...rest] = spec.split(/(?=[.#])/);
  const el = document.createElement(tag || "div");
  for (const part of rest) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key.includes("-") || key === "for" || key === "role") el.setAttribute(key, value);
    else el[key] = value;
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** An SVG element with attributes. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  el.append(...children);
  return el;
}

/** Replaces the main view's content. */
export function mount(...children) {
  const view = document.getElementById("view");
  view.replaceChildren(...children);
  return view;
}

/** Shows a message at the top of the page (an error's text, never its JSON). */
export function notify(message, kind = "error") {
  const notice = document.getElementById("notice");
  notice.textContent = message;
  notice.className = kind;
  notice.hidden = !message;
}

/** Runs `action`, showing its error's message in `where` (or the top notice). */
export async function attempt(action, where) {
  try {
    if (where) where.textContent = "";
    return await action();
  } catch (err) {
    const message = err && err.message ? err.message : String(err);
    if (where) where.textContent = message;
    else notify(message);
    return undefined;
  }
}

/** Goes to `path` in the app without reloading the page. */
export function go(path) {
  history.pushState(null, "", path);
  window.dispatchEvent(new Event("popstate"));
}

/** "3 minutes ago"-style text for an ISO time. */
export function ago(iso) {
  const secs = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (secs < 60) return "just now";
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}
