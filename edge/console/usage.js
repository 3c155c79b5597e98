// Usage: today's quotas, and messages and model tokens per day as an SVG chart.

import { api } from "./api.js";
import { attempt, h, mount, svg } from "./ui.js";

/** The usage page. */
export async function usageView() {
  const error = h("p.error#usage-error", { role: "alert" });
  const quotas = h("div.quotas#quotas");
  const chart = h("figure.chart#usage-chart");
  mount(h("section", {}, h("h1", {}, "Usage"), quotas, chart, error));
  await attempt(async () => {
    const [today, days] = await Promise.all([api.get("/usage"), api.get("/usage/history?days=30")]);
    quotas.replaceChildren(
      meter("Messages today", today.messages),
      meter("Model tokens today", today.tokens),
      meter("Agents", today.agents),
      h("p.muted", {}, `Tier: ${today.tier}`));
    chart.replaceChildren(drawChart(days), h("figcaption", {}, "Last 30 days: ",
      h("span.key.messages", {}, "messages"), " and ", h("span.key.tokens", {}, "model tokens")));
  }, error);
}

function meter(label, { used, limit }) {
  const left = Math.max(0, limit - used);
  return h("div.meter", {},
    h("label", {}, label),
    h("progress", { max: limit || 1, value: Math.min(used, limit || used) }),
    h("span.left", {}, `${used.toLocaleString()} of ${limit.toLocaleString()} used · ${left.toLocaleString()} left`));
}

/** Bars for messages (left scale), a line for tokens (right scale), one slot per day. */
function drawChart(days) {
  const width = 600, height = 200, pad = 24;
  const rows = lastDays(days, 30);
  const tokens = (d) => d.metered_input_tokens + d.metered_output_tokens;
  const maxMessages = Math.max(1, ...rows.map((d) => d.messages));
  const maxTokens = Math.max(1, ...rows.map(tokens));
  const slot = (width - 2 * pad) / Math.max(rows.length, 1);
  const y = (value, max) => height - pad - (value / max) * (height - 2 * pad);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "usage per day" });
  chart.append(svg("line", { x1: pad, x2: width - pad, y1: height - pad, y2: height - pad, class: "axis" }));
  rows.forEach((d, i) => {
    if (!d.messages) return;
    const x = pad + i * slot;
    const bar = svg("rect", {
      x: x + slot * 0.15, width: slot * 0.7, y: y(d.messages, maxMessages),
      height: height - pad - y(d.messages, maxMessages), class: "messages",
    }, svg("title", {}, `${d.day}: ${d.messages} messages, ${tokens(d)} tokens`));
    chart.append(bar);
  });
  if (rows.some((d) => d.messages || tokens(d))) {
    const points = rows.map((d, i) => `${pad + (i + 0.5) * slot},${y(tokens(d), maxTokens)}`).join(" ");
    chart.append(svg("polyline", { points, class: "tokens" }));
    rows.forEach((d, i) => chart.append(svg("circle", {
      cx: pad + (i + 0.5) * slot, cy: y(tokens(d), maxTokens), r: 2.5, class: "tokens",
    })));
    chart.append(svg("text", { x: pad, y: 12, class: "scale" }, `${maxMessages} msgs`));
    chart.append(svg("text", { x: width - pad, y: 12, class: "scale end" }, `${maxTokens} tokens`));
  } else {
    chart.append(svg("text", { x: width / 2, y: height / 2, class: "scale middle" }, "No usage yet"));
  }
  return chart;
}

/** One row per UTC day of the last `count` (days without usage as zeros), oldest first. */
function lastDays(days, count) {
  const byDay = new Map(days.map((d) => [d.day, d]));
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  return Array.from({ length: count }, (_, i) => {
    const day = new Date(today - (count - 1 - i) * 86_400_000).toISOString().slice(0, 10);
    return byDay.get(day) || { day, messages: 0, metered_input_tokens: 0, metered_output_tokens: 0 };
  });
}
