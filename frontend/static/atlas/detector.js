// The detector page: its ROC curve on the held-out texts, and a box that scores typed texts with POST /api/detect,
// each token shaded by its contribution to the score.
(function () {
  const evaluation = JSON.parse(document.getElementById("detector-evaluation").textContent);
  const config = { displaylogo: false, responsive: true };
  Plotly.newPlot("detector-roc", [
    { x: evaluation.rocFpr, y: evaluation.rocTpr, mode: "lines+markers", name: `ROC (AUROC ${evaluation.auroc.toFixed(3)})` },
    { x: [0, 1], y: [0, 1], mode: "lines", name: "chance", line: { dash: "dot", color: "#999" } },
  ], {
    margin: { t: 30, r: 10, b: 50, l: 60 }, xaxis: { title: "false positive rate", range: [0, 1] },
    yaxis: { title: "true positive rate", range: [0, 1.02] }, title: { text: "ROC, held-out texts", font: { size: 13 } },
  }, config);

  const section = document.getElementById("detect");
  const field = (name) => section.querySelector(`[data-field="${name}"]`);
  section.querySelector("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const texts = event.target.texts.value.split("\n").filter((line) => line.trim());
    field("error").hidden = true;
    if (!texts.length) {
      field("error").textContent = "Type at least one text.";
      field("error").hidden = false;
      return;
    }
    const response = await fetch(section.dataset.url, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ detector: section.dataset.detector, texts }),
    });
    const answer = await response.json();
    if (!response.ok) {
      field("error").textContent = answer.message;
      field("error").hidden = false;
      return;
    }
    field("results").replaceChildren(...answer.results.map((result) => {
      const item = document.createElement("li");
      item.className = result.detected ? "detected" : "not-detected";
      const verdict = document.createElement("b");
      verdict.textContent = `${result.detected ? "detected" : "not detected"} (score ${result.score.toFixed(3)}) `;
      const line = document.createElement("span");
      line.className = "tokens";
      const top = Math.max(1e-9, ...result.contributions.map(Math.abs));
      result.tokens.forEach((token, i) => {
        if (i === 0) return;  // BOS counts nowhere
        const span = document.createElement("span");
        const share = result.contributions[i] / top;
        span.textContent = token;
        span.title = `contribution ${result.contributions[i].toFixed(3)}`;
        span.style.background = share >= 0 ? `rgba(192,57,43,${share.toFixed(3)})` : `rgba(44,127,184,${(-share).toFixed(3)})`;
        line.append(span);
      });
      item.append(verdict, line);
      return item;
    }));
  });
})();
