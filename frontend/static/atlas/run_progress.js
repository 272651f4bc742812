// Polls the run's JSON while it is queued or running, updates the bar, and reloads when results are published.
(function () {
  const section = document.getElementById("run");
  if (!section) return;
  const field = (name) => section.querySelector(`[data-field="${name}"]`);
  const bar = section.querySelector("progress");
  const live = (status) => status === "queued" || status === "running";
  if (!live(section.dataset.status)) return;

  async function poll() {
    let run;
    try {
      const response = await fetch(section.dataset.url, { headers: { Accept: "application/json" } });
      run = await response.json();
    } catch (error) {
      setTimeout(poll, 5000);
      return;
    }
    field("status").textContent = run.status;
    field("status").className = `status status-${run.status}`;
    field("phase").textContent = run.phase || "waiting for a worker";
    field("done").textContent = run.progressDone;
    field("total").textContent = run.progressTotal;
    bar.max = Math.max(run.progressTotal, 1);
    bar.value = run.progressDone;
    if (run.error) { field("error").hidden = false; field("error").textContent = run.error; }
    if (run.status === "succeeded") { window.location.reload(); return; }
    if (live(run.status)) setTimeout(poll, 1500);
  }
  poll();
})();
