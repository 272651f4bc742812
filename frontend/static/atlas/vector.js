// Draws a vector's value in each dimension with the plotly.js that the server ships (no CDN).
(function () {
  const source = document.getElementById("vector-values");
  const target = document.getElementById("vector-values-plot");
  if (!source || !target || typeof Plotly === "undefined") return;
  const values = JSON.parse(source.textContent);
  const dimensions = values.map((_, position) => position);
  Plotly.newPlot(target, [{ type: "bar", x: dimensions, y: values, marker: { color: "rgb(124, 58, 237)" } }], {
    margin: { l: 50, r: 10, t: 10, b: 40 }, bargap: 0, height: 260,
    xaxis: { title: { text: "dimension" } }, yaxis: { title: { text: "value" } },
  }, { displayModeBar: false, responsive: true });
})();
