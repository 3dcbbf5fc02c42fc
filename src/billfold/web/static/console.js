// billfold console: the phone menu, charts (Chart.js, served by billfold), live quotes.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const menu = document.querySelector("[data-menu]");
  if (menu) {
    menu.addEventListener("click", () => {
      const nav = document.getElementById("nav");
      const open = nav.classList.toggle("open");
      menu.setAttribute("aria-expanded", String(open));
    });
  }
  // On a phone, a table's rows read as cards: each cell is labeled with its column.
  document.querySelectorAll(".scroll table").forEach((table) => {
    const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    if (!heads.length) return;
    table.classList.add("cards");
    table.querySelectorAll("tbody tr").forEach((row) => {
      [...row.children].forEach((cell, i) => { if (heads[i]) cell.dataset.label = heads[i]; });
    });
  });
  const palette = ["#1d5fd1", "#e07b00", "#1b7a3d", "#8e44ad", "#b3261e", "#00838f"];
  document.querySelectorAll("canvas[data-chart]").forEach((canvas) => {
    if (typeof Chart === "undefined") return;
    const spec = JSON.parse(canvas.dataset.chart);
    new Chart(canvas, {
      type: spec.kind,
      data: {
        labels: spec.labels,
        datasets: spec.series.map((s, i) => ({
          label: s.name,
          data: s.data.map(Number),
          backgroundColor: palette[i % palette.length],
          borderColor: palette[i % palette.length],
          stack: spec.kind === "bar" ? "all" : undefined,
        })),
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { stacked: spec.kind === "bar" }, y: { stacked: spec.kind === "bar", beginAtZero: true } },
        plugins: { legend: { display: spec.series.length > 1 } },
      },
    });
  });
  document.querySelectorAll("form[data-preview]").forEach((form) => {
    const out = document.getElementById(form.dataset.preview);
    let timer = null;
    const run = async () => {
      const body = new FormData(form);
      body.set("preview", "1");
      const answer = await fetch(form.dataset.previewUrl, { method: "POST", body, credentials: "same-origin" });
      out.innerHTML = await answer.text();
    };
    form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(run, 300); });
    run();
  });
  document.querySelectorAll("[data-add-charge]").forEach((button) => {
    button.addEventListener("click", () => {
      const area = document.getElementById(button.dataset.target);
      let plan;
      try { plan = JSON.parse(area.value); } catch (e) { plan = {}; }
      plan.charges = (plan.charges || []).concat([JSON.parse(button.dataset.addCharge)]);
      area.value = JSON.stringify(plan, null, 2);
      area.dispatchEvent(new Event("input", { bubbles: true }));
    });
  });
  document.querySelectorAll("[data-busy]").forEach((form) => {
    form.addEventListener("submit", () => {
      const button = form.querySelector("button[type=submit]");
      if (button) { button.disabled = true; button.textContent = form.dataset.busy; }
      const bar = form.querySelector("progress");
      if (bar) bar.hidden = false;
    });
  });
});
