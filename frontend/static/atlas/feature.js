// Draws the feature's two histograms with the plotly.js that the server ships (no CDN).
(function () {
  const layout = (xTitle) => ({
    margin: { l: 40, r: 10, t: 10, b: 40 }, bargap: 0.05, height: 220,
    xaxis: { title: { text: xTitle } }, yaxis: { title: { text: "count" } },
  });
  function bars(dataId, plotId, color, xTitle) {
    const source = document.getElementById(dataId);
    const target = document.getElementById(plotId);
    if (!source || !target || typeof Plotly === "undefined") return;
    const data = JSON.parse(source.textContent);
    Plotly.newPlot(target, [{ type: "bar", x: data.x, y: data.y, marker: { color } }], layout(xTitle),
                   { displayModeBar: false, responsive: true });
  }
  bars("act-hist", "act-hist-plot", "rgb(249, 115, 22)", "activation");
  bars("logit-hist", "logit-hist-plot", "rgb(37, 99, 235)", "logit");
})();
