// The channel atlas in the explorer: draw a layer's filter visualizations as a job.
"use strict";
(function () {
  const box = document.getElementById("filters");
  if (!box) return;
  const button = box.querySelector("button");
  const status = box.querySelector("[role=status]");
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

  async function api(path, options) {
    const response = await fetch(path, options);
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail || response.statusText);
    return body;
  }

  function show(channels) {
    const wanted = new Set(channels.map(String));
    for (const img of document.querySelectorAll("img.filter[data-src]")) {
      if (wanted.has(img.dataset.channel)) {
        img.src = img.dataset.src;
        img.hidden = false;
      }
    }
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      let job = await api(box.dataset.start, { method: "POST" });
      while (job.status === "queued" || job.status === "running") {
        status.textContent = job.status + (job.total ? " " + job.done + "/" + job.total : "");
        await sleep(500);
        job = await api("/api/jobs/" + encodeURIComponent(job.id));
      }
      if (job.status !== "done") throw new Error(job.error || job.status);
      status.textContent = "";
      show(job.result.channels);
    } catch (err) {
      status.textContent = String(err.message || err);
      button.disabled = false;
    }
  });
})();
