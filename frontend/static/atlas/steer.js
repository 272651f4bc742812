// The steering page: features (by SAE and index, or found by their labels) each with a strength, the sampling
// settings, then POST /api/steer; a worker writes DEFAULT and STEERED, shown side by side with every generated token
// shaded by how unlikely the model found it (hover for its log-prob and the alternatives). A result's permalink,
// /steer/<id>, reopens its settings and shows it from the page itself, with no worker asked. Text is only ever set
// with textContent, never as HTML.
(function () {
  const section = document.getElementById("steer");
  if (!section) return;
  const form = section.querySelector("form");
  const field = (name) => section.querySelector(`[data-field="${name}"]`);
  const action = (name) => section.querySelector(`[data-action="${name}"]`);
  const island = (id) => {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  };
  const sources = island("steer-sources") || {};
  const stored = island("steer-result");
  const featuresMax = Number(section.dataset.featuresMax);
  const strengthLimit = Number(section.dataset.strengthLimit);
  const vectorSource = new RegExp(section.dataset.vectorSourcePattern);
  // Neuronpedia's strength for a direction that names none: a feature that never fired, a vector without a default.
  const FALLBACK_STRENGTH = 10;
  // A slider spans this many times the feature's max activation each way (within the API's limit), so that its
  // useful strengths are not squeezed into a corner of a ±300 track.
  const SLIDER_SPAN = 10;
  // A tab shows as a mark; a newline as a mark that still breaks the line.
  const visible = (token) => token.replace(/\t/g, "⇥").replace(/\n/g, "↵\n");
  const chosen = []; // {modelId, layer, index, strength, number, slider}: in the order they were added
  let searchOffset = null;

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function requestJson(url, body) {
    const options = { headers: { Accept: "application/json" } };
    if (body !== undefined) {
      Object.assign(options, { method: "POST", body: JSON.stringify(body) });
      options.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(url, options);
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) throw new Error((data && data.message) || `The server answered ${response.status}.`);
    return data;
  }

  const addressPath = (model, layer, index) =>
    `/${encodeURIComponent(model)}/${encodeURIComponent(layer)}/${index}`;
  const rounded = (value) => Math.round(value * 100) / 100;
  const clamped = (value) => Math.min(Math.max(value, -strengthLimit), strengthLimit);

  function showError(message) {
    field("error").textContent = message;
    field("error").hidden = !message;
  }

  // A direction's label and the scale of its strengths: a feature's max activation from GET /api/feature, or a
  // vector's default strength from POST /api/vector/get (its address has a vector source's shape).
  async function directionFacts(model, layer, index) {
    if (vectorSource.test(layer)) {
      const { vector } = await requestJson(section.dataset.vectorUrl, { modelId: model, source: layer, index });
      const strength = vector.vectorDefaultSteerStrength || FALLBACK_STRENGTH;
      return { label: vector.vectorLabel, scale: Math.abs(strength), strength };
    }
    const feature = await requestJson(`/api/feature${addressPath(model, layer, index)}`);
    const label = feature.explanations.length ? feature.explanations[0].description : "";
    const scale = feature.maxActApprox > 0 ? feature.maxActApprox : 0;
    return { label, scale, strength: scale > 0 ? scale : FALLBACK_STRENGTH };
  }

  // The slider reaches SLIDER_SPAN x the scale, at least the strength itself, at most the API's limit.
  function sliderReach(scale, strength) {
    const span = scale > 0 ? scale * SLIDER_SPAN : strengthLimit;
    return Math.min(strengthLimit, Math.max(span, Math.abs(strength)));
  }

  function setStrength(entry, strength, from) {
    entry.strength = clamped(strength);
    const reach = Math.max(Number(entry.slider.max), Math.abs(entry.strength));
    entry.slider.min = String(-reach);
    entry.slider.max = String(reach);
    if (from !== entry.slider) entry.slider.value = String(entry.strength);
    if (from !== entry.number) entry.number.value = String(entry.strength);
  }

  function featureItem(entry, facts) {
    const item = element("li", "steer-feature");
    const address = element("a", "steer-address", `${entry.layer} / ${entry.index}`);
    address.href = addressPath(entry.modelId, entry.layer, entry.index);
    item.appendChild(address);
    item.appendChild(element("span", "steer-label", facts.label || (facts.missing ? "" : "no label yet")));
    if (facts.missing) item.appendChild(element("span", "error", ` ${facts.missing}`));
    const controls = element("div", "steer-strength");
    entry.slider = element("input");
    Object.assign(entry.slider, { type: "range", step: "any" });
    entry.slider.setAttribute("aria-label", `strength of ${entry.layer} / ${entry.index}`);
    const reach = sliderReach(facts.scale, entry.strength);
    entry.slider.min = String(-reach);
    entry.slider.max = String(reach);
    entry.number = element("input");
    Object.assign(entry.number, { type: "number", step: "any", min: String(-strengthLimit), max: String(strengthLimit),
                                  required: true });
    entry.number.setAttribute("aria-label", `strength of ${entry.layer} / ${entry.index} (number)`);
    entry.slider.addEventListener("input", () => setStrength(entry, Number(entry.slider.value), entry.slider));
    entry.number.addEventListener("input", () => {
      if (entry.number.value !== "" && Number.isFinite(Number(entry.number.value))) {
        setStrength(entry, Number(entry.number.value), entry.number);
      }
    });
    entry.number.addEventListener("change", () => setStrength(entry, Number(entry.number.value) || 0));
    const remove = element("button", "link", "Remove");
    remove.type = "button";
    remove.addEventListener("click", () => {
      chosen.splice(chosen.indexOf(entry), 1);
      item.remove();
      featuresChanged();
    });
    controls.append("Strength ", entry.slider, entry.number, remove);
    item.appendChild(controls);
    return item;
  }

  function featuresChanged() {
    field("features-empty").hidden = chosen.length > 0;
    action("add").disabled = chosen.length >= featuresMax;
  }

  // Adds a direction with its label; strength defaults to its max activation (a vector's own default). `keep` adds
  // it even when its facts cannot be read (a permalink's feature whose SAE has gone), showing why.
  // Why a direction cannot join the list now, or "".
  function featureRefusal(layer, index) {
    if (chosen.some((entry) => entry.layer === layer && entry.index === index)) {
      return `${layer} / ${index} is chosen already; change its strength below.`;
    }
    return chosen.length >= featuresMax ? `At most ${featuresMax} features steer at once; remove one first.` : "";
  }

  async function featureAdd(model, layer, index, { strength = null, keep = false } = {}) {
    field("features-status").textContent = featureRefusal(layer, index);
    if (field("features-status").textContent) return;
    let facts;
    try {
      facts = await directionFacts(model, layer, index);
    } catch (error) {
      if (!keep) {
        field("features-status").textContent = error.message;
        return;
      }
      facts = { label: "", scale: 0, strength: FALLBACK_STRENGTH, missing: error.message };
    }
    // (Asked again: the list may have changed while the facts were read, a second click on the same result say.)
    field("features-status").textContent = featureRefusal(layer, index);
    if (field("features-status").textContent) return;
    // A strength asked for is kept exactly (a permalink's must ask the same request again); a default is rounded.
    const entry = { modelId: model, layer, index, strength: clamped(strength ?? rounded(facts.strength)) };
    const item = featureItem(entry, facts);
    setStrength(entry, entry.strength);
    chosen.push(entry);
    field("features").appendChild(item);
    featuresChanged();
  }

  function sourcesShow(model) {
    const select = form.elements.source;
    select.replaceChildren(...(sources[model] || []).map((slug) => {
      const option = element("option", "", slug);
      option.value = slug;
      return option;
    }));
    const none = !select.options.length;
    select.disabled = none;
    form.elements.index.disabled = none;
    field("features-status").textContent = none ? "This model has no SAE yet; upload one to steer with its features." : "";
  }

  function featuresClear() {
    chosen.splice(0, chosen.length);
    field("features").replaceChildren();
    field("search-results").replaceChildren();
    action("more").hidden = true;
    featuresChanged();
  }

  function addByIndex() {
    const index = form.elements.index.value;
    if (!/^\d+$/.test(index) || form.elements.source.disabled) {
      field("features-status").textContent = "Type a feature index (0 or more).";
      return;
    }
    featureAdd(form.elements.model.value, form.elements.source.value, Number(index));
  }

  function searchResult(result) {
    const item = element("li");
    const add = element("button", "", "Add");
    add.type = "button";
    add.addEventListener("click", () => featureAdd(result.modelId, result.layer, result.index));
    item.append(add, " ", element("span", "steer-address", `${result.layer} / ${result.index}`), " ",
                element("span", "muted", result.description));
    return item;
  }

  async function labelSearch(offset) {
    const query = form.elements.label.value;
    if (!query.trim()) return;
    field("features-status").textContent = "Searching the labels…";
    try {
      const answer = await requestJson(section.dataset.searchUrl,
                                       { modelId: form.elements.model.value, query, offset });
      const list = field("search-results");
      if (offset === 0) list.replaceChildren();
      answer.results.forEach((result) => list.appendChild(searchResult(result)));
      searchOffset = answer.hasMore ? answer.nextOffset : null;
      action("more").hidden = searchOffset === null;
      field("features-status").textContent = list.children.length ? "" : "No label matches that.";
    } catch (error) {
      field("features-status").textContent = error.message;
    }
  }

  // Enter in the index or label box adds or searches; it must not generate.
  function onEnter(input, run) {
    input.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault();
      run();
    });
  }

  // A token's log-prob and the most likely tokens at its place, the chosen one marked.
  function tokenDetails(side, logprob) {
    const box = element("div");
    box.appendChild(element("strong", "", `${side}: “${visible(logprob.token)}”`));
    const chance = (Math.exp(logprob.logprob) * 100).toFixed(1);
    box.appendChild(element("span", "muted", ` log-prob ${logprob.logprob.toFixed(3)} (p = ${chance}%)`));
    const list = element("ol", "steer-alternatives");
    logprob.topLogprobs.forEach((alternative) => {
      const item = element("li", alternative.tokenId === logprob.tokenId ? "chosen" : "");
      item.append(element("span", "tokentext", visible(alternative.token)), " ",
                  element("span", "value", alternative.logprob.toFixed(3)));
      list.appendChild(item);
    });
    box.appendChild(list);
    return box;
  }

  // The prompt as plain text, then a span per generated token, shaded by 1 - p (the less likely, the darker).
  function completionShow(target, side, text, prompt, logprobs) {
    const generated = logprobs.map((logprob) => logprob.token).join("");
    const promptPart = text.endsWith(generated) ? text.slice(0, text.length - generated.length) : prompt;
    const details = field("token-details");
    const tokens = logprobs.map((logprob) => {
      const span = element("span", "tok", visible(logprob.token));
      span.tabIndex = 0;
      span.title = `log-prob ${logprob.logprob.toFixed(3)}`;
      span.dataset.logprob = String(logprob.logprob);
      span.style.setProperty("--a", (1 - Math.exp(logprob.logprob)).toFixed(3));
      const show = () => {
        details.replaceChildren(tokenDetails(side, logprob));
        details.hidden = false;
      };
      span.addEventListener("mouseenter", show);
      span.addEventListener("focus", show);
      return span;
    });
    target.replaceChildren(element("span", "steer-prompt-text", promptPart), ...tokens);
  }

  function resultShow(result) {
    const chat = typeof result.STEERED !== "string";
    if (chat) {
      // A chat's result (from /api/steer-chat) is shown as its two conversations' text; this page writes completions.
      field("default-text").replaceChildren(element("span", "steer-prompt-text", result.DEFAULT.raw));
      field("steered-text").replaceChildren(element("span", "steer-prompt-text", result.STEERED.raw));
      field("note").textContent = "A chat result, shown read-only: this page steers completions of a prompt.";
      field("note").hidden = false;
    } else {
      completionShow(field("default-text"), "Default", result.DEFAULT, result.prompt, result.defaultLogProbs);
      completionShow(field("steered-text"), "Steered", result.STEERED, result.prompt, result.steeredLogProbs);
    }
    field("token-details").hidden = true;
    field("results").hidden = false;
    const link = field("permalink-link");
    link.href = result.shareUrl;
    link.textContent = result.shareUrl;
    field("permalink").hidden = false;
  }

  function settingsFill(settings) {
    ["n_tokens", "temperature", "freq_penalty", "seed", "strength_multiplier", "steer_method"].forEach((name) => {
      form.elements[name].value = String(settings[name]);
    });
    form.elements.normalize_steering.checked = settings.normalize_steering;
  }

  function steerBody() {
    const number = (name) => Number(form.elements[name].value);
    return {
      prompt: form.elements.prompt.value, modelId: form.elements.model.value,
      features: chosen.map(({ modelId, layer, index, strength }) => ({ modelId, layer, index, strength })),
      n_tokens: number("n_tokens"), temperature: number("temperature"), freq_penalty: number("freq_penalty"),
      seed: number("seed"), strength_multiplier: number("strength_multiplier"),
      steer_method: form.elements.steer_method.value, normalize_steering: form.elements.normalize_steering.checked,
    };
  }

  const generate = action("generate");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!chosen.length) {
      showError("Add at least one feature to steer with.");
      return;
    }
    const body = steerBody();
    showError("");
    generate.disabled = true;
    field("progress-text").textContent = `Generating ${body.n_tokens} tokens on a worker…`;
    field("progress").hidden = false;
    try {
      const result = await requestJson(section.dataset.steerUrl, body);
      field("note").hidden = true;
      resultShow(result);
      // The address bar shows the permalink (its path: the page may be served under another host name).
      window.history.replaceState(null, "", new URL(result.shareUrl, window.location.href).pathname);
    } catch (error) {
      showError(error.message);
    } finally {
      field("progress").hidden = true;
      generate.disabled = false;
    }
  });

  form.elements.model.addEventListener("change", () => {
    featuresClear();
    sourcesShow(form.elements.model.value);
  });
  action("add").addEventListener("click", addByIndex);
  action("search").addEventListener("click", () => labelSearch(0));
  action("more").addEventListener("click", () => labelSearch(searchOffset));
  onEnter(form.elements.index, addByIndex);
  onEnter(form.elements.label, () => labelSearch(0));

  async function open() {
    sourcesShow(form.elements.model.value);
    featuresChanged();
    if (stored) {
      // A permalink: its settings and features back in the form, and its result as stored.
      if (typeof stored.prompt === "string") form.elements.prompt.value = stored.prompt;
      settingsFill(stored.settings);
      resultShow(stored);
      for (const feature of stored.features) {
        await featureAdd(feature.modelId, feature.layer, feature.index, { strength: feature.strength, keep: true });
      }
      return;
    }
    const asked = new URLSearchParams(window.location.search);
    const [source, index, strength] = [asked.get("source"), asked.get("index"), asked.get("strength")];
    if (source && index && /^\d+$/.test(index)) {
      const wanted = strength !== null && strength !== "" && Number.isFinite(Number(strength)) ? Number(strength) : null;
      await featureAdd(form.elements.model.value, source, Number(index), { strength: wanted });
    }
  }

  open();
})();
