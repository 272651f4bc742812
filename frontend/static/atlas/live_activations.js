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
      (result) => [shadedLine(result, Number(scale) || result.maxValue)],
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
