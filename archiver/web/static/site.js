// The two things the site cannot do without a script: draw the volume chart and follow the
// live tail. Everything else is plain HTML.
"use strict";

function drawVolume(canvas, data) {
  // Stacked bars: one per hour, a colour per stream, the legend on the right.
  const ctx = canvas.getContext("2d");
  const streams = Object.keys(data);
  const present = [...new Set(Object.values(data).flatMap(Object.keys))].sort();
  if (!present.length) return;
  const hours = [];  // every hour from the first to the last, empty ones included
  for (let t = Date.parse(present[0] + ":00Z"); t <= Date.parse(present[present.length - 1] + ":00Z"); t += 3600e3) {
    hours.push(new Date(t).toISOString().slice(0, 13));
  }
  const total = (hour) => streams.reduce((sum, s) => sum + (data[s][hour] || 0), 0);
  const max = Math.max(1, ...hours.map(total));
  const colours = ["#0645ad", "#a00000", "#006400", "#6a0dad", "#8b4500", "#111111"];
  const w = canvas.width - 140, h = canvas.height, pad = 24;
  const slot = Math.min(48, (w - pad) / hours.length), bar = Math.max(1, slot * 0.8);
  ctx.font = "12px sans-serif";
  ctx.fillStyle = "#111";
  ctx.fillText(max + " records", 2, 12);
  ctx.fillText(hours[0] + ":00", pad, h - 6);
  const lastX = pad + (hours.length - 1) * slot;
  if (lastX > pad + 120) ctx.fillText(hours[hours.length - 1] + ":00", Math.min(lastX, w - 110), h - 6);
  hours.forEach((hour, i) => {
    let top = h - pad;
    streams.forEach((stream, k) => {
      const height = ((data[stream][hour] || 0) * (h - 2 * pad)) / max;
      ctx.fillStyle = colours[k % colours.length];
      ctx.fillRect(pad + i * slot, top - height, bar, height);
      top -= height;
    });
  });
  streams.forEach((stream, k) => {
    ctx.fillStyle = colours[k % colours.length];
    ctx.fillRect(w + 10, pad + 16 * k, 10, 10);
    ctx.fillText(stream, w + 26, pad + 16 * k + 10);
  });
}

function followTail(pre, state) {
  const seen = new Set();
  let since = "";
  async function poll() {
    const query = new URLSearchParams();
    if (pre.dataset.stream) query.set("stream", pre.dataset.stream);
    if (since) query.set("since", since);
    try {
      const answer = await fetch(pre.dataset.src + "?" + query, { headers: { Accept: "application/json" } });
      if (!answer.ok) throw new Error(answer.status + " " + answer.statusText);
      const { records } = await answer.json();
      for (const record of records) {
        const key = record.ts + "\u0000" + record.line;
        if (seen.has(key)) continue;
        seen.add(key);
        pre.append(record.line);
        since = record.ts;
      }
      state.textContent = "Following: " + seen.size + " records shown, newest last.";
    } catch (error) {
      state.textContent = "Tail paused (" + error.message + "); retrying.";
    }
    setTimeout(poll, 1000);
  }
  poll();
}

document.addEventListener("DOMContentLoaded", () => {
  const canvas = document.getElementById("volume");
  const data = document.getElementById("volume-data");
  if (canvas && data) drawVolume(canvas, JSON.parse(data.textContent));
  const tail = document.getElementById("tail");
  if (tail) followTail(tail, document.getElementById("tail-state"));
});
