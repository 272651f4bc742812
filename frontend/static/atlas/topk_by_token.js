// Top features by token: typed text goes to POST /api/search-topk-by-token, a worker finds each token's strongest
// features, and the tokens come back shaded by their strongest one. Hovering (or focusing) a token lists its
// features, each a link to its page; clicking a token opens its strongest feature. Text is only ever set with
// textContent, never as HTML.
(function () {
  const section = document.getElementById("topk-by-token");
  if (!section) return;
  const form = section.querySelector("form");
  const field = (name) => section.querySelector(`[data-field="${name}"]`);
  const VISIBLE = { "\n": "↵", "\t": "⇥" };
  const visible = (token) => token.replace(/[\n\t]/g, (character) => VISIBLE[character]);
  const featureUrl = (model, source, index) =>
    `/${encodeURIComponent(model)}/${encodeURIComponent(source)}/${index}`;

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The list a hovered token shows: each feature's activation, index and newest label, linked to its page.
  function featureList(model, source, result) {
    const box = element("div", "example");
    box.appendChild(element("strong", "", `“${visible(result.token)}” (token ${result.position})`));
    if (result.topFeatures.length === 0) {
      box.appendChild(element("p", "muted", "No feature fires on this token (or none passes the density filter)."));
      return box;
    }
    const list = element("ol");
    result.topFeatures.forEach((top) => {
      const item = element("li");
      const link = element("a", "", `${source} / ${top.featureIndex}`);
      link.href = featureUrl(model, source, top.featureIndex);
      item.appendChild(element("span", "value", top.activationValue.toFixed(2)));
      item.appendChild(link);
      const label = top.feature && top.feature.explanations.length ? top.feature.explanations[0].description : "";
      if (label) item.appendChild(element("span", "muted", ` ${label}`));
      list.appendChild(item);
    });
    box.appendChild(list);
    return box;
  }

  // One line of tokens, each shaded by its strongest activation against the text's strongest.
  function tokenLine(model, source, answer, details) {
    const line = element("div", "example");
    const strongest = (result) => (result.topFeatures.length ? result.topFeatures[0].activationValue : 0);
    const scale = Math.max(0, ...answer.results.map(strongest)) || 1;
    answer.results.forEach((result) => {
      const span = element("span", "tok", visible(result.token));
      span.tabIndex = 0;
      span.dataset.position = String(result.position);
      span.style.setProperty("--a", Math.min(strongest(result) / scale, 1).toFixed(3));
      span.title = result.topFeatures.length ? `strongest: feature ${result.topFeatures[0].featureIndex}` : "";
      const show = () => details.replaceChildren(featureList(model, source, result));
      span.addEventListener("mouseenter", show);
      span.addEventListener("focus", show);
      span.addEventListener("click", () => {
        if (result.topFeatures.length) window.location.href = featureUrl(model, source, result.topFeatures[0].featureIndex);
      });
      line.appendChild(span);
    });
    return line;
  }

  async function topkByToken(body) {
    const response = await fetch(section.dataset.url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) throw new Error((data && data.message) || `The server answered ${response.status}.`);
    return data;
  }

  const button = form.querySelector("button");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = form.elements.text.value;
    if (!text.trim()) return;
    const option = form.elements.sae.selectedOptions[0];
    const model = option.dataset.model;
    const density = form.elements.density.value;
    button.disabled = true;
    field("status").textContent = "Running on a worker…";
    field("error").hidden = true;
    try {
      const answer = await topkByToken({
        modelId: model, source: option.dataset.source, text,
        numResults: Number(form.elements.results.value) || undefined,
        ignoreBos: form.elements.ignore_bos.checked,
        densityThreshold: density === "" ? undefined : Number(density),
      });
      const details = element("div");
      details.dataset.field = "token-features";
      details.appendChild(element("p", "muted", "Hover over a token to list its features."));
      field("result").replaceChildren(tokenLine(model, answer.source, answer, details), details);
      field("status").textContent = "";
    } catch (error) {
      field("error").textContent = error.message;
      field("error").hidden = false;
      field("status").textContent = "";
    } finally {
      button.disabled = false;
    }
  });
})();
