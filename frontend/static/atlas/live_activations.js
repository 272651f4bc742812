// Live activations: typed text goes to the JSON API, a worker runs it through the model and SAE, and the
// tokens come back shaded like the examples. Token text is only ever set with textContent, never as HTML.
(function () {
  const VISIBLE = { "\n": "↵", "\t": "⇥" };
  const visible = (token) => token.replace(/[\n\t]/g, (character) => VISIBLE[character]);

  // One line like a dashboard example: the peak value, then a span per token shaded by value / scale.
  function shadedLine(result, scale) {
    const line = document.createElement("div");
    line.className = "example";
    const peak = document.createElement("span");
    peak.className = "value";
    peak.textContent = result.maxValue.toFixed(2);
    line.appendChild(peak);
    const safeScale = scale > 0 ? scale : 1;
    result.tokens.forEach((token, position) => {
      const value = result.values[position];
      const span = document.createElement("span");
      span.className = position === result.maxValueTokenIndex && result.maxValue > 0 ? "tok focus" : "tok";
      span.style.setProperty("--a", Math.min(Math.max(value / safeScale, 0), 1).toFixed(3));
      span.title = value.toFixed(3);
      span.textContent = visible(token);
      line.appendChild(span);
    });
    return line;
  }

  const percent = (share) => `${(share * 100).toFixed(1)} %`;

  // How unusual a token is: the higher of its two percentiles, or without a distribution its reconstruction
  // error (a share of the activation, 0 to 1 and more).
  function unusualness(anomaly, position) {
    const shares = [anomaly.reconstructionErrorPercentile, anomaly.rarityPercentile]
      .filter((values) => values && values[position] !== null).map((values) => values[position]);
    if (shares.length) return Math.max(...shares);
    const error = anomaly.reconstructionError[position];
    return error === null ? 0 : Math.min(error, 1);
  }

  function anomalyTitle(anomaly, position) {
    const error = anomaly.reconstructionError[position];
    if (error === null) return "BOS: not scored";
    const parts = [`reconstruction error ${error.toFixed(3)}`];
    if (anomaly.reconstructionErrorPercentile) parts[0] += ` (above ${percent(anomaly.reconstructionErrorPercentile[position])} of the dataset)`;
    if (anomaly.rarity) {
      let rarity = `rarity ${anomaly.rarity[position].toFixed(2)} nats`;
      if (anomaly.rarityPercentile) rarity += ` (above ${percent(anomaly.rarityPercentile[position])} of the dataset)`;
      parts.push(rarity);
    }
    return parts.join(", ");
  }

  // The token most unusual to the SAE, in a sentence: by percentile where the dataset's distribution is known.
  function anomalySentence(result) {
    const anomaly = result.anomaly;
    const sentence = document.createElement("p");
    sentence.className = "muted";
    sentence.dataset.field = "anomaly-summary";
    const candidates = [
      [anomaly.maxReconstructionErrorTokenIndex, anomaly.maxReconstructionErrorPercentile, "reconstruction error"],
      [anomaly.maxRarityTokenIndex, anomaly.maxRarityPercentile, "rarity of its features"],
    ].filter(([position, share]) => position !== null && share !== null);
    if (candidates.length) {
      const [position, share, score] = candidates.reduce((best, next) => (next[1] > best[1] ? next : best));
      sentence.textContent = `Most unusual token: '${visible(result.tokens[position])}', more unusual than ` +
        `${percent(share)} of the dataset's tokens (by ${score}).`;
    } else if (anomaly.maxReconstructionErrorTokenIndex !== null) {
      const position = anomaly.maxReconstructionErrorTokenIndex;
      sentence.textContent = `Highest reconstruction error: '${visible(result.tokens[position])}' ` +
        `(${anomaly.maxReconstructionError.toFixed(3)}). ${anomaly.message || ""}`;
    }
    return sentence;
  }

  // A second line under the activations: each token shaded by how unusual it is, the scores on hover.
  function anomalyLine(result) {
    const line = document.createElement("div");
    line.className = "example";
    line.dataset.field = "anomaly";
    const label = document.createElement("span");
    label.className = "value";
    label.textContent = "unusual";
    line.appendChild(label);
    result.tokens.forEach((token, position) => {
      const span = document.createElement("span");
      span.className = "anomaly-tok";
      span.style.backgroundColor = `rgba(220, 38, 38, ${(0.6 * unusualness(result.anomaly, position)).toFixed(3)})`;
      span.title = anomalyTitle(result.anomaly, position);
      span.textContent = visible(token);
      line.appendChild(span);
    });
    return line;
  }

  async function postJson(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) {
      throw new Error((data && data.message) || `The server answered ${response.status}.`);
    }
    return data;
  }

  // Wires a section's form: runs `ask(text)` on submit and hands its answer to `show`, with status and errors.
  function liveForm(section, ask, show) {
    const form = section.querySelector("form");
    const field = (name) => section.querySelector(`[data-field="${name}"]`);
    const button = form.querySelector("button");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = form.elements.text.value;
      if (!text.trim()) return;
      button.disabled = true;
      field("status").textContent = "Running on a worker…";
      field("error").hidden = true;
      try {
        const answer = await ask(text);
        field("result").replaceChildren(...show(answer));
        field("status").textContent = "";
      } catch (error) {
        field("error").textContent = error.message;
        field("error").hidden = false;
        field("status").textContent = "";
      } finally {
        button.disabled = false;
      }
    });
  }

  const feature = document.getElementById("live-activation");
  if (feature) {
    const { url, model, source, index, scale } = feature.dataset;
    liveForm(
      feature,
      (text) => postJson(url, { feature: { modelId: model, source, index: Number(index) }, customText: text }),
      (result) => [shadedLine(result, Number(scale) || result.maxValue),
        ...(result.anomaly ? [anomalyLine(result), anomalySentence(result)] : [])],
    );
  }

  const search = document.getElementById("activation-search");
  if (search) {
    const form = search.querySelector("form");
    liveForm(
      search,
      (text) => {
        const option = form.elements.sae.selectedOptions[0];
        return postJson(search.dataset.url, {
          modelId: option.dataset.model, source: option.dataset.source, text,
          numResults: Number(form.elements.results.value) || undefined,
        });
      },
      (answer) => {
        if (answer.result.length === 0) {
          const none = document.createElement("p");
          none.className = "muted";
          none.textContent = "No feature fires on this text.";
          return [none];
        }
        return answer.result.map((result) => {
          const row = document.createElement("div");
          row.className = "search-result";
          const link = document.createElement("a");
          link.href = `/${encodeURIComponent(result.modelId)}/${encodeURIComponent(result.layer)}/${result.index}`;
          link.textContent = `${result.layer} / ${result.index}`;
          row.appendChild(link);
          row.appendChild(shadedLine(result, result.maxValue));
          return row;
        });
      },
    );
  }
})();
