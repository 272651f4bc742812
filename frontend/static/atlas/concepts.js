// The concept-search page: polls a running search and reloads when it is done; draws each SAE's charts (per-text
// scores of the top features by class, the sparse-probing curve) and fills the probe-cosine and nearest tables.
(function () {
  const section = document.getElementById("concept-search");
  if (!section) return;
  const running = (status) => status === "queued" || status === "running";

  async function poll() {
    try {
      const response = await fetch(section.dataset.url, { headers: { Accept: "application/json" } });
      const search = await response.json();
      const bar = section.querySelector("progress");
      if (bar) {
        bar.max = search.progress.total;
        bar.value = search.progress.done;
        section.querySelector('[data-field="progress"]').textContent =
          `${search.progress.done} / ${search.progress.total} texts`;
      }
      if (!running(search.status)) {
        window.location.reload();
        return;
      }
    } catch (error) {
      // A dropped connection: try again at the next tick.
    }
    setTimeout(poll, 1000);
  }
  if (running(section.dataset.status)) {
    setTimeout(poll, 1000);
    return;
  }

  const results = JSON.parse(document.getElementById("concept-results").textContent);
  const texts = JSON.parse(document.getElementById("concept-texts").textContent);
  const layout = { margin: { t: 30, r: 10, b: 50, l: 60 } };
  const config = { displaylogo: false, responsive: true };
  const text = (i) => texts[i] || `dataset sequence ${i - texts.length + 1}`;

  results.forEach((result, index) => {
    const chosen = result.features.slice(0, result.scores[0] ? result.scores[0].length : 0);
    const traces = [true, false].map((positive) => {
      const x = [], y = [], hover = [];
      result.labels.forEach((label, row) => {
        if (label !== positive) return;
        chosen.forEach((feature, column) => {
          x.push(`#${feature.index}`);
          y.push(result.scores[row][column]);
          hover.push(text(row));
        });
      });
      return {
        type: "box", boxpoints: "all", jitter: 0.4, pointpos: 0, x, y, text: hover,
        name: positive ? "positive texts" : "negative texts", hovertemplate: "%{y:.3f}<br>%{text}<extra></extra>",
        marker: { color: positive ? "#c0392b" : "#2c7fb8", size: 4 },
      };
    });
    const scoresPlot = document.querySelector(`.concept-scores-plot[data-index="${index}"]`);
    Plotly.newPlot(scoresPlot, traces, {
      ...layout, boxmode: "group", xaxis: { type: "category", title: "feature" }, yaxis: { title: "pooled activation" },
      title: { text: "Top features: each text's pooled activation", font: { size: 13 } },
    }, config);

    const points = result.probes.sparseProbing;
    const ks = points.map((point) => point.k);
    const flat = (value, name, dash) => ({
      x: [Math.min(...ks), Math.max(...ks)], y: [value, value], mode: "lines", name, line: { dash },
    });
    const sparsePlot = document.querySelector(`.concept-sparse-plot[data-index="${index}"]`);
    Plotly.newPlot(sparsePlot, [
      { x: ks, y: points.map((point) => point.auroc), mode: "lines+markers", name: "top-k features: AUROC" },
      { x: ks, y: points.map((point) => point.accuracy), mode: "lines+markers", name: "top-k features: accuracy" },
      flat(result.probes.logistic.auroc, "logistic probe AUROC", "dash"),
      flat(result.probes.massMean.auroc, "mass-mean probe AUROC", "dot"),
    ], {
      ...layout, xaxis: { title: "features (k)", type: "log", tickvals: ks, ticktext: ks.map(String) }, yaxis: { title: "held-out", range: [0, 1.02] },
      title: { text: "Sparse probing against the probes", font: { size: 13 } },
    }, config);

    const body = document.querySelector(`.concept-cosines tbody[data-index="${index}"]`);
    const mass = result.probes.massMean.cosines, logistic = result.probes.logistic.cosines;
    body.replaceChildren(...mass.features.slice(0, 10).map((feature, row) => {
      const line = document.createElement("tr");
      [`#${feature}`, mass.decoder[row], mass.encoder[row], logistic.decoder[row], logistic.encoder[row]]
        .forEach((value) => {
          const cell = document.createElement("td");
          cell.textContent = typeof value === "number" ? value.toFixed(3) : value;
          line.append(cell);
        });
      return line;
    }));
    document.querySelectorAll(`.concept-nearest[data-index="${index}"]`).forEach((span) => {
      const nearest = result.probes[span.dataset.probe].nearest;
      span.textContent = nearest.features.map((feature, i) => `#${feature} (${nearest.cosines[i].toFixed(3)})`)
        .join(", ");
    });
  });
})();
