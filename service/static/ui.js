// Reviewer UI behaviour: seeking the player from the timeline, transcript and evidence, and the
// keyboard flow (queue: j/k/Enter; scan page: j/k segments, r/s/a/e decision, u queue).
"use strict";

function typing(event) {
  const el = event.target;
  return el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));
}

function setupQueue() {
  const rows = Array.from(document.querySelectorAll("tr.queue-row"));
  if (!rows.length) return;
  let current = -1;
  const select = (i) => {
    if (i < 0 || i >= rows.length) return;
    rows.forEach((r) => r.classList.remove("selected"));
    current = i;
    rows[i].classList.add("selected");
    const link = rows[i].querySelector("a.open");
    link.focus();
    rows[i].scrollIntoView({ block: "nearest" });
  };
  rows.forEach((row, i) => {
    row.addEventListener("click", (e) => {
      if (e.target.closest("a")) return;
      window.location.href = row.dataset.href;
    });
    row.querySelector("a.open").addEventListener("focus", () => {
      rows.forEach((r) => r.classList.remove("selected"));
      current = i;
      row.classList.add("selected");
    });
  });
  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "j") { select(current + 1); e.preventDefault(); }
    else if (e.key === "k") { select(Math.max(0, current - 1)); e.preventDefault(); }
    else if (e.key === "Enter" && current >= 0 && document.activeElement === document.body) {
      window.location.href = rows[current].dataset.href;
    }
  });
}

function setupScan() {
  const player = document.getElementById("player");
  if (!player) return;
  const timeline = document.getElementById("timeline");
  const playhead = document.getElementById("playhead");
  document.querySelectorAll("#timeline .seg").forEach((seg) => {
    seg.style.left = seg.dataset.left + "%";
    seg.style.width = seg.dataset.width + "%";
  });
  document.querySelectorAll(".bar > span[data-v]").forEach((bar) => {
    bar.style.width = bar.dataset.v + "%";
  });
  const seek = (seconds) => {
    player.currentTime = Math.max(0, seconds);
    player.focus();
  };
  document.querySelectorAll("[data-seek]").forEach((el) => {
    el.addEventListener("click", () => seek(parseFloat(el.dataset.seek)));
  });
  const duration = () => player.duration || parseFloat(timeline.dataset.duration) || 1;
  player.addEventListener("timeupdate", () => {
    playhead.style.left = Math.min(100, (100 * player.currentTime) / duration()) + "%";
  });
  timeline.addEventListener("click", (e) => {
    if (e.target !== timeline) return;
    const box = timeline.getBoundingClientRect();
    seek(((e.clientX - box.left) / box.width) * duration());
  });
  const segments = Array.from(document.querySelectorAll("#timeline .seg"));
  let current = -1;
  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    if ((e.key === "j" || e.key === "k") && segments.length) {
      current = e.key === "j" ? Math.min(segments.length - 1, current + 1) : Math.max(0, current - 1);
      segments[current].focus();
      seek(parseFloat(segments[current].dataset.seek));
      e.preventDefault();
    } else if (e.key === "u") {
      window.location.href = "/ui/";
    } else if (e.key === "n") {
      const next = document.querySelector("a.next");
      if (next) window.location.href = next.href;
    } else {
      const radio = document.querySelector(`input[name=action][data-key="${e.key}"]`);
      if (radio) {
        radio.checked = true;
        document.getElementById("reason").focus();
        e.preventDefault();
      }
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupQueue();
  setupScan();
});
