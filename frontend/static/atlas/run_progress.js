// Polls the run's JSON while it is queued or running, updates the bar, shards whose worker went silent and the
// run's events (a dead worker's shard handed to another), and reloads when results are published.
(function () {
  const section = document.getElementById("run");
  if (!section) return;
  const field = (name) => section.querySelector(`[data-field="${name}"]`);
  const bar = section.querySelector("progress");
  const live = (status) => status === "queued" || status === "running";
  if (!live(section.dataset.status)) return;

  // A running shard whose worker has not written its heartbeat for longer than the stale threshold: probably dead.
  function showLate(shards) {
    const late = shards.filter((shard) => shard.silentSeconds !== null);
    field("late").hidden = late.length === 0;
    field("late").textContent = late.map((shard) =>
      `Shard ${shard.index + 1}: no heartbeat for ${shard.silentSeconds} s from ${shard.worker}. A running ` +
      "worker hands it to another at its next recovery sweep; if none is running, start one (make worker)."
    ).join(" ");
  }

  function showEvents(events) {
    const list = field("events");
    list.hidden = events.length === 0;
    list.replaceChildren(...events.map((event) => {
      const item = document.createElement("li");
      const time = document.createElement("time");
      time.dateTime = event.at;
      time.textContent = event.at.slice(11, 19);
      item.append(time, " " + event.message);
      return item;
    }));
  }

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
    showLate(run.shards);
    showEvents(run.events);
    if (run.status === "succeeded") { window.location.reload(); return; }
    if (live(run.status)) setTimeout(poll, 1500);
  }
  poll();
})();
