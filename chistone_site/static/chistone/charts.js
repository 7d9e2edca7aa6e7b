/* Small traffic charts (uPlot, vendored under vendor/uplot): requests/s per minute over the
 * last hour, with the 4xx and 5xx shares of it. Each chart reads its columns from the
 * json_script element named by its data-chart attribute. Without JavaScript the figures in
 * the tables still say everything; the charts are an addition. */
(function () {
  "use strict";
  function css(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }
  function draw(holder) {
    var source = document.getElementById(holder.getAttribute("data-chart"));
    if (!source || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(source.textContent);
    var large = holder.classList.contains("large");
    holder.textContent = "";
    var width = Math.max(holder.clientWidth || 0, large ? 280 : 160);
    var text = css("--body-quiet-color", "#666");
    var grid = css("--hairline-color", "#ddd");
    var opts = {
      width: width, height: large ? 200 : 48,
      legend: {show: large}, cursor: {show: large, y: false},
      scales: {x: {time: true}, y: {range: function (u, min, max) { return [0, Math.max(max, 0.1)]; }}},
      axes: large ? [{stroke: text, grid: {stroke: grid}}, {stroke: text, grid: {stroke: grid}, size: 50}]
                  : [{show: false}, {show: false}],
      series: [
        {},
        // Bars: a minute with traffic shows even when it is the only one in the hour.
        {label: "req/s", stroke: css("--link-fg", "#447e9b"), width: 1, fill: "rgba(68,126,155,0.35)",
         paths: uPlot.paths.bars({size: [0.9, 12]}), points: {show: false}},
        {label: "4xx/s", stroke: "#c77c02", width: 1, points: {show: false}},
        {label: "5xx/s", stroke: "#c62828", width: 1.5, points: {show: false}}
      ]
    };
    holder.chart = new uPlot(opts, [data.x, data.rps, data.c4, data.c5], holder);
    holder.setAttribute("data-drawn", String(data.x.length));
  }
  function drawAll() {
    document.querySelectorAll(".chistone-chart[data-chart]").forEach(draw);
  }
  var pending = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(pending);
    pending = window.setTimeout(drawAll, 150);
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
