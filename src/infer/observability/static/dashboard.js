/* infer live dashboard: renders the snapshot of /api/v1/dashboard, live over the server-sent events of
 * /api/v1/dashboard/stream (polling the snapshot when events fail). No build step: plain ES2017 and the vendored
 * Apache ECharts. Tests wait on window.__dashboard.updates and on data-ready/data-points of each chart container. */
(function () {
  "use strict";

  var POLL_MS = 2000;
  var SEVERITY_COLORS = { LOW: "#f2c94c", MEDIUM: "#f2994a", HIGH: "#eb5757", CRITICAL: "#8e1b1b" };
  var PALETTE = ["#2f6fde", "#1f9d55", "#d98b06", "#9b51e0", "#d64545", "#0f9fb5", "#6b7385"];
  var state = { model: "", forecast: "", drift: "", charts: {}, pollTimer: null };
  var dash = (window.__dashboard = { updates: 0, lastSnapshot: null, source: "", errors: [] });

  // ---- helpers ---------------------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function isNum(v) { return typeof v === "number" && isFinite(v); }

  function fmt(v, digits) {
    if (!isNum(v)) return "n/a";
    var d = digits === undefined ? 2 : digits;
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < Math.pow(10, -d))) return v.toExponential(1);
    return v.toFixed(d);
  }

  function ms(v) {
    if (!isNum(v)) return "n/a";
    var a = Math.abs(v);
    return v.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3);
  }

  function pct(v) { return isNum(v) ? (v * 100).toFixed(1) + "%" : "n/a"; }

  function clock(t) {
    if (!isNum(t)) return "n/a";
    var d = new Date(t * 1000);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }

  function el(tag, attrs) {
    var node = document.createElement(tag);
    var a = attrs || {};
    Object.keys(a).forEach(function (k) {
      if (k === "text") node.textContent = a[k];
      else if (k === "cls") node.className = a[k];
      else node.setAttribute(k, a[k]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  function td(text, num) { return el("td", { cls: num ? "num" : "", text: text }); }

  function key(name, version) { return name + ":" + version; }

  function chart(id) {
    if (!state.charts[id]) state.charts[id] = echarts.init($(id), null, { renderer: "canvas" });
    return state.charts[id];
  }

  function ready(id, points) {
    var node = $(id);
    node.setAttribute("data-points", String(points));
    node.setAttribute("data-ready", points > 0 ? "1" : "0");
  }

  function empty(id, text) {
    chart(id).setOption({
      title: { text: text, left: "center", top: "middle", textStyle: { color: "#8a93a6", fontSize: 12,
        fontWeight: "normal" } },
      xAxis: [], yAxis: [], series: [], visualMap: [], legend: [],
    }, { notMerge: true });
    ready(id, 0);
  }

  function setOptions(id, option, points) {
    option.animation = false;
    chart(id).setOption(option, { notMerge: true });
    ready(id, points);
  }

  function fillSelect(select, options, current) {
    var values = options.map(function (o) { return o.value; });
    var same = select.options.length === options.length &&
      values.every(function (v, i) { return select.options[i].value === v && select.options[i].text === options[i].label; });
    if (!same) {
      select.textContent = "";
      options.forEach(function (o) { select.appendChild(el("option", { value: o.value, text: o.label })); });
    }
    if (values.indexOf(current) >= 0) select.value = current;
    return select.value;
  }

  // a time axis ending at the server's time and covering at least minSpan seconds (a single point would otherwise
  // stretch the axis over days)
  function timeAxis(ts, minSpan) {
    var now = dash.lastSnapshot ? dash.lastSnapshot.server_time : Date.now() / 1000;
    var first = ts.reduce(function (m, t) { return isNum(t) && t < m ? t : m; }, now);
    var last = ts.reduce(function (m, t) { return isNum(t) && t > m ? t : m; }, now);
    return { type: "time", min: Math.min(first, last - minSpan) * 1000, max: last * 1000,
      axisLabel: { fontSize: 10, hideOverlap: true, formatter: function (v) { return clock(v / 1000); } } };
  }

  var GRID = { left: 44, right: 44, top: 30, bottom: 24 };
  var TOOLTIP = { trigger: "axis", confine: true };

  // ---- header and models -----------------------------------------------------------------------

  function header(snap) {
    $("server-time").textContent = clock(snap.server_time);
    $("updates").textContent = String(dash.updates);
    var errors = Object.keys(snap.errors);
    var node = $("source-errors");
    node.hidden = errors.length === 0;
    node.textContent = errors.length + " source error" + (errors.length === 1 ? "" : "s");
    node.title = errors.map(function (k) { return k + ": " + snap.errors[k]; }).join("\n");
  }

  function windowOf(m, name) {
    return m.latency.windows[name] || {};
  }

  // the first model to show: the busiest of a task family (anomaly, forecast, ...), else the busiest of all
  function busiest(models) {
    var best = null, bestScore = -1;
    models.forEach(function (m) {
      var rps = windowOf(m, "5m").rps;
      var measured = m.latency.series.length && isNum(rps) && rps > 0;
      var score = measured ? rps + (m.family ? 1e9 : 0) : -1;
      if (score > bestScore) { best = m; bestScore = score; }
    });
    return best || models[0];
  }

  function modelsTable(snap) {
    var body = $("models-table").tBodies[0];
    body.textContent = "";
    snap.models.forEach(function (m) {
      var w = windowOf(m, "5m");
      var row = el("tr", { "data-model": key(m.name, m.version) },
        td(m.name), td(String(m.version)),
        el("td", {}, el("span", { cls: "state state-" + m.state, title: m.reason || "", text: m.state || "?" })),
        td(m.family || "—"), td(fmt(w.rps, 1), true), td(ms(w.p99_ms), true), td(pct(w.error_rate), true));
      if (key(m.name, m.version) === state.model) row.className = "selected";
      row.addEventListener("click", function () { state.model = key(m.name, m.version); render(); });
      body.appendChild(row);
    });
    $("models-count").textContent = snap.models.length + " versions";
    ready("models", snap.models.length);
  }

  // ---- latency, throughput and batch sizes ------------------------------------------------------

  function selectedModel(snap) {
    var select = $("model-select");
    if (!snap.models.length) { fillSelect(select, [], ""); return null; }
    if (!state.model || !snap.models.some(function (m) { return key(m.name, m.version) === state.model; })) {
      var b = busiest(snap.models);
      state.model = key(b.name, b.version);
    }
    var options = snap.models.map(function (m) {
      return { value: key(m.name, m.version), label: m.name + " v" + m.version };
    });
    state.model = fillSelect(select, options, state.model);
    return snap.models.filter(function (m) { return key(m.name, m.version) === state.model; })[0] || null;
  }

  function tiles(m) {
    var box = $("latency-tiles");
    box.textContent = "";
    ["1m", "5m", "1h"].forEach(function (name) {
      var w = m ? windowOf(m, name) : {};
      box.appendChild(el("div", { cls: "tile" }, name + " · p50/p95/p99 ms",
        el("b", { text: ms(w.p50_ms) + " / " + ms(w.p95_ms) + " / " + ms(w.p99_ms) }),
        el("span", { text: fmt(w.rps, 1) + " req/s · err " + pct(w.error_rate) + " · batch " + fmt(w.batch_mean, 1) +
          (isNum(w.cache_hit_ratio) ? " · cache " + pct(w.cache_hit_ratio) : "") })));
    });
  }

  function latencyChart(m) {
    var series = m ? m.latency.series : [];
    if (!series.length) { empty("chart-latency", "no traffic measured yet"); return; }
    function line(field, name, color) {
      return { name: name, type: "line", showSymbol: series.length < 3, yAxisIndex: 0, color: color,
        data: series.map(function (p) { return [p.t * 1000, isNum(p[field]) ? p[field] : null]; }) };
    }
    setOptions("chart-latency", {
      grid: GRID, tooltip: TOOLTIP,
      legend: { top: 0, left: "center", itemWidth: 12, textStyle: { fontSize: 11 } },
      xAxis: timeAxis(series.map(function (p) { return p.t; }), 300),
      yAxis: [{ type: "value", name: "ms", nameGap: 8, axisLabel: { fontSize: 10 } },
        { type: "value", name: "req/s", nameGap: 8, splitLine: { show: false }, axisLabel: { fontSize: 10 } }],
      series: [
        { name: "req/s", type: "bar", yAxisIndex: 1, color: "rgba(47,111,222,0.18)", barMaxWidth: 8,
          data: series.map(function (p) { return [p.t * 1000, isNum(p.rps) ? p.rps : null]; }) },
        line("p50_ms", "p50", "#1f9d55"), line("p95_ms", "p95", "#d98b06"), line("p99_ms", "p99", "#d64545"),
      ],
    }, series.length);
  }

  function batchChart(m) {
    var bins = m ? m.batch_sizes : [];
    $("batch-model").textContent = m ? m.name + " v" + m.version : "";
    var total = bins.reduce(function (s, b) { return s + b[1]; }, 0);
    if (!total) { empty("chart-batch", "no batches yet"); return; }
    setOptions("chart-batch", {
      grid: { left: 40, right: 10, top: 16, bottom: 36 }, tooltip: { trigger: "axis", confine: true },
      xAxis: { type: "category", name: "rows per batch ≤", nameLocation: "middle", nameGap: 22,
        data: bins.map(function (b) { return String(b[0]); }), axisLabel: { fontSize: 10 } },
      yAxis: { type: "value", axisLabel: { fontSize: 10 } },
      series: [{ type: "bar", color: "#2f6fde", data: bins.map(function (b) { return b[1]; }) }],
    }, bins.filter(function (b) { return b[1] > 0; }).length);
  }

  // ---- anomalies ---------------------------------------------------------------------------------

  function anomalyCharts(snap) {
    var a = snap.anomalies, sev = a.severities;  // the server always sends every field (dashboard.py)
    $("anomaly-counts").textContent = a.total + " events · " + sev.slice(1).map(function (s) {
      return s + " " + a.by_severity[s];
    }).join(" · ");
    if (!a.events.length) empty("chart-anomaly-timeline", "no anomalies flagged");
    else {
      setOptions("chart-anomaly-timeline", {
        grid: { left: 40, right: 10, top: 24, bottom: 24 },
        tooltip: { trigger: "item", confine: true, formatter: function (p) {
          var e = p.data.e;
          return e.model + " v" + e.version + "<br>" + e.severity + " " + (e.type || "") + "<br>score " +
            fmt(e.score, 3) + " at " + clock(e.t);
        } },
        legend: { top: 0, left: "center", itemWidth: 10, textStyle: { fontSize: 10 } },
        xAxis: timeAxis(a.events.map(function (e) { return e.t; }), 60),
        yAxis: { type: "value", name: "score", nameGap: 6, axisLabel: { fontSize: 10 } },
        series: sev.slice(1).map(function (s, i) {
          return { name: s, type: "scatter", color: SEVERITY_COLORS[s], symbolSize: 5 + 2 * i,
            data: a.events.filter(function (e) { return e.severity === s; })
              .map(function (e) { return { value: [e.t * 1000, e.score], e: e }; }) };
        }),
      }, a.events.length);
    }
    var h = a.heatmap;
    if (!h.cells.length) { empty("chart-anomaly-heatmap", "severity heatmap: nothing yet"); return; }
    var labels = [];
    for (var b = 0; b < h.buckets; b++) labels.push(clock(h.start + b * h.bucket_s));
    var max = h.cells.reduce(function (m, c) { return Math.max(m, c[2]); }, 1);
    setOptions("chart-anomaly-heatmap", {
      grid: { left: 66, right: 10, top: 24, bottom: 24 },
      title: { text: "per " + h.bucket_s + " s", right: 0, top: 0, textStyle: { fontSize: 10, color: "#6b7385",
        fontWeight: "normal" } },
      tooltip: { confine: true, formatter: function (p) {
        return sev[p.value[1]] + " at " + labels[p.value[0]] + ": " + p.value[2];
      } },
      xAxis: { type: "category", data: labels, axisLabel: { fontSize: 10 }, splitArea: { show: true } },
      yAxis: { type: "category", data: sev, axisLabel: { fontSize: 10 }, splitArea: { show: true } },
      visualMap: { min: 0, max: max, show: false, inRange: { color: ["#fff6d5", "#f2994a", "#8e1b1b"] } },
      series: [{ type: "heatmap", data: h.cells, emphasis: { itemStyle: { borderColor: "#333", borderWidth: 1 } } }],
    }, h.cells.length);
  }

  // ---- forecasts ------------------------------------------------------------------------------------

  function forecastChart(snap) {
    var all = snap.forecasts.slice().reverse();  // latest first
    var options = all.map(function (f) {
      return { value: key(f.model, f.version) + ":" + f.id, label: f.model + " v" + f.version + " · " + f.id };
    });
    var values = options.map(function (o) { return o.value; });
    if (values.indexOf(state.forecast) < 0) state.forecast = values[0] || "";
    state.forecast = fillSelect($("forecast-select"), options, state.forecast);
    var f = all[values.indexOf(state.forecast)];
    if (!f || !f.mean || !f.mean.length) { empty("chart-forecast", "no forecasts requested with an id yet"); return; }
    var hist = f.history || [];
    var n = f.mean.length;
    var x = [];
    for (var i = -hist.length; i < n; i++) x.push(i < 0 ? String(i) : "+" + (i + 1));
    function pad(values) { return hist.map(function () { return null; }).concat(values); }
    var lower = f.lower || [], upper = f.upper || [];
    var band = f.mean.map(function (_, j) {
      return isNum(upper[j]) && isNum(lower[j]) ? upper[j] - lower[j] : null;
    });
    var actual = f.actual || [];
    var series = [
      { name: "history", type: "line", showSymbol: false, color: "#6b7385",
        data: hist.concat(f.mean.map(function () { return null; })) },
      { name: "lower", type: "line", stack: "band", showSymbol: false, lineStyle: { opacity: 0 },
        data: pad(lower.map(function (v) { return isNum(v) ? v : null; })) },
      { name: "interval", type: "line", stack: "band", showSymbol: false, lineStyle: { opacity: 0 },
        areaStyle: { color: "rgba(47,111,222,0.18)" }, color: "rgba(47,111,222,0.4)", data: pad(band) },
      { name: "mean", type: "line", showSymbol: false, color: "#2f6fde", lineStyle: { width: 2 }, data: pad(f.mean) },
    ];
    if (actual.length) {
      series.push({ name: "actual", type: "scatter", color: "#d64545", symbolSize: 6,
        data: pad(f.mean.map(function (_, j) { return isNum(actual[j]) ? actual[j] : null; })) });
    }
    setOptions("chart-forecast", {
      grid: { left: 48, right: 12, top: 24, bottom: 24 }, tooltip: TOOLTIP,
      legend: { top: 0, left: "center", itemWidth: 12, textStyle: { fontSize: 11 },
        data: ["history", "mean", "interval"].concat(actual.length ? ["actual"] : []) },
      xAxis: { type: "category", data: x, boundaryGap: false, axisLabel: { fontSize: 10 } },
      yAxis: { type: "value", scale: true, axisLabel: { fontSize: 10 } },
      series: series,
    }, hist.length + n + actual.filter(isNum).length);
  }

  // ---- drift -----------------------------------------------------------------------------------------

  function driftPanel(snap) {
    var reports = snap.drift;
    var options = reports.map(function (r) { return { value: key(r.model, r.version), label: r.model + " v" + r.version }; });
    var values = options.map(function (o) { return o.value; });
    if (values.indexOf(state.drift) < 0) {
      var drifted = reports.filter(function (r) { return r.drifted; })[0];
      state.drift = drifted ? key(drifted.model, drifted.version) : values[0] || "";
    }
    state.drift = fillSelect($("drift-select"), options, state.drift);
    var r = reports[values.indexOf(state.drift)];
    var body = $("drift-table").tBodies[0];
    body.textContent = "";
    if (!r || !r.features || !r.features.length) {
      $("drift-state").textContent = r ? (r.reason || "not evaluated yet") : "no model with a drift reference";
      empty("chart-drift", "no drift evaluation yet");
      return;
    }
    $("drift-state").textContent = (r.drifted ? "DRIFTED" : "no drift") + " · " + r.rows + " rows · " + clock(r.at);
    $("drift-state").style.color = r.drifted ? "#d64545" : "";
    var threshold = isNum(r.psi_threshold) ? r.psi_threshold : 0.2;
    var features = r.features.slice().sort(function (a, b) {  // drifted first, then by PSI
      return (b.drifted ? 1 : 0) - (a.drifted ? 1 : 0) || (isNum(b.psi) ? b.psi : 0) - (isNum(a.psi) ? a.psi : 0);
    });
    setOptions("chart-drift", {
      grid: { left: 40, right: 10, top: 12, bottom: 22 }, tooltip: { trigger: "axis", confine: true },
      xAxis: { type: "category", data: features.map(function (f) { return f.feature; }),
        axisLabel: { fontSize: 10, hideOverlap: true, overflow: "truncate", width: 70 } },
      yAxis: { type: "value", name: "PSI", nameGap: 4, axisLabel: { fontSize: 10 } },
      series: [{ type: "bar", name: "PSI", data: features.map(function (f) {
        return { value: isNum(f.psi) ? f.psi : 0, itemStyle: { color: f.drifted ? "#d64545" : "#2f6fde" } };
      }), markLine: { symbol: "none", silent: true, lineStyle: { color: "#d98b06", type: "dashed" },
        label: { formatter: "threshold " + threshold, fontSize: 10, position: "insideEndTop" },
        data: [{ yAxis: threshold }] } }],
    }, features.length);
    features.forEach(function (f) {
      body.appendChild(el("tr", { cls: f.drifted ? "drifted" : "" }, td(f.feature), td(f.kind || ""),
        td(fmt(f.psi, 3), true), td(fmt(f.ks, 3), true), td(fmt(f.ks_p, 4), true), td(fmt(f.chi2_p, 4), true)));
    });
  }

  // ---- online accuracy ---------------------------------------------------------------------------------

  function accuracyPanel(snap) {
    var entries = snap.accuracy;
    var body = $("accuracy-table").tBodies[0];
    body.textContent = "";
    entries.forEach(function (a) {
      body.appendChild(el("tr", {}, td(a.model), td(String(a.version)), td(String(a.samples || 0), true),
        td(fmt(a.accuracy, 3), true), td(fmt(a.f1, 3), true), td(fmt(a.mae, 3), true), td(fmt(a.rmse, 3), true)));
    });
    var points = 0;
    var series = entries.filter(function (a) { return a.series && a.series.length; }).map(function (a, i) {
      var regression = a.kind === "regression";
      points += a.series.length;
      return { name: a.model + " v" + a.version + (regression ? " MAE" : " F1"), type: "line", showSymbol: true,
        symbolSize: 4, yAxisIndex: regression ? 1 : 0, color: PALETTE[i % PALETTE.length],
        data: a.series.map(function (p) { return [p.t * 1000, isNum(p.value) ? p.value : null]; }) };
    });
    if (!series.length) { empty("chart-accuracy", entries.length ? "waiting for ground truth" : "no model tracks accuracy"); return; }
    setOptions("chart-accuracy", {
      grid: { left: 40, right: 40, top: 28, bottom: 22 }, tooltip: TOOLTIP,
      legend: { top: 0, left: "center", itemWidth: 10, textStyle: { fontSize: 10 } },
      xAxis: timeAxis(entries.reduce(function (ts, a) {
        return ts.concat((a.series || []).map(function (p) { return p.t; }));
      }, []), 600),
      yAxis: [{ type: "value", name: "F1", min: 0, max: 1, nameGap: 4, axisLabel: { fontSize: 10 } },
        { type: "value", name: "MAE", nameGap: 4, splitLine: { show: false }, axisLabel: { fontSize: 10 } }],
      series: series,
    }, points);
  }

  // ---- deployments ----------------------------------------------------------------------------------------

  function deploymentCard(d) {
    var table = el("table", { cls: "tbl" }, el("thead", {}, el("tr", {}, el("th", { text: "target" }),
      el("th", { cls: "num", text: "share" }), el("th", { cls: "num", text: "req" }),
      el("th", { cls: "num", text: "err" }), el("th", { cls: "num", text: "mean ms" }),
      el("th", { cls: "num", text: "outcome" }))));
    var body = el("tbody");
    var weights = (d.variants || []).reduce(function (s, v) { return s + (isNum(v.weight) ? v.weight : 0); }, 0);
    (d.variants || []).forEach(function (v) {
      body.appendChild(el("tr", {}, td(v.target), td(weights > 0 ? pct(v.weight / weights) : "n/a", true), td(String(v.requests || 0), true),
        td(pct(v.error_rate), true), td(ms(v.mean_latency_ms), true),
        td(isNum(v.outcome_mean) ? fmt(v.outcome_mean, 3) + " (" + v.outcomes + ")" : "n/a", true)));
    });
    table.appendChild(body);
    var card = el("div", { cls: "dep", "data-deployment": d.name },
      el("div", { cls: "dep-head" }, d.name, el("span", { cls: "kind", text: d.kind })), table);
    var c = d.comparison;
    if (c) {
      var sig = isNum(c.p_value) && c.p_value < 0.05;
      card.appendChild(el("div", { cls: "dep-stats" }, (c.metric || "metric") + " Δ " + fmt(c.difference, 4) +
        " · 95% CI [" + fmt(c.ci95_low, 4) + ", " + fmt(c.ci95_high, 4) + "] · ",
        el("span", { cls: sig ? "sig" : "", text: "p = " + fmt(c.p_value, 4) })));
    }
    if (d.canary) {
      var k = d.canary;
      card.appendChild(el("div", { cls: "dep-stats", text: "canary stage " + k.stage + " · " + fmt(k.percent, 0) +
        "% · " + k.status + (k.reason ? " · " + k.reason : "") }));
      var bar = el("div", { cls: "bar" }, el("span", {}));
      bar.firstChild.style.width = (isNum(k.percent) ? Math.max(0, Math.min(100, k.percent)) : 0) + "%";
      card.appendChild(bar);
    }
    if (d.shadow && d.shadow.target) {
      var s = d.shadow;
      card.appendChild(el("div", { cls: "dep-stats", text: "shadow " + (s.target || "") + " · compared " +
        (s.compared || 0) + " · matched " + (s.matched || 0) + " · mismatched " + (s.mismatched || 0) }));
    }
    return card;
  }

  function deploymentsPanel(snap) {
    var box = $("deployments");
    var deps = snap.deployments;
    box.textContent = "";
    if (!deps.length) box.appendChild(el("div", { cls: "empty", text: "no deployments" }));
    deps.forEach(function (d) { box.appendChild(deploymentCard(d)); });
    $("deployments-count").textContent = deps.length ? String(deps.length) : "";
    ready("deployments", deps.length);
  }

  // ---- rendering and updates ------------------------------------------------------------------------------

  function guarded(name, fn, snap) {
    try { fn(snap); } catch (e) {
      dash.errors.push(name + ": " + e);
      if (dash.errors.length > 50) dash.errors.shift();
      if (window.console) console.error("dashboard panel " + name, e);
    }
  }

  function render() {
    var snap = dash.lastSnapshot;
    if (!snap) return;
    header(snap);
    var m = null;
    guarded("select", function (s) { m = selectedModel(s); }, snap);
    guarded("models", modelsTable, snap);
    guarded("tiles", function () { tiles(m); }, snap);
    guarded("latency", function () { latencyChart(m); }, snap);
    guarded("batch", function () { batchChart(m); }, snap);
    guarded("anomalies", anomalyCharts, snap);
    guarded("forecasts", forecastChart, snap);
    guarded("drift", driftPanel, snap);
    guarded("accuracy", accuracyPanel, snap);
    guarded("deployments", deploymentsPanel, snap);
  }

  function apply(snap, source) {
    dash.updates += 1;
    dash.lastSnapshot = snap;
    dash.source = source;
    render();
  }

  function setConn(kind, text) {
    var node = $("conn");
    node.className = "conn conn-" + kind;
    node.textContent = text;
  }

  function poll() {
    fetch("api/v1/dashboard", { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (snap) { setConn("poll", "polling"); apply(snap, "poll"); })
      .catch(function () { setConn("down", "offline"); })
      .then(function () { state.pollTimer = setTimeout(poll, POLL_MS); });
  }

  function startPolling() {
    if (state.pollTimer === null) poll();
  }

  function connect() {
    if (!window.EventSource) { startPolling(); return; }
    var es = new EventSource("api/v1/dashboard/stream");
    var received = false, failures = 0;
    es.addEventListener("snapshot", function (e) {
      received = true;
      failures = 0;
      setConn("live", "live");
      apply(JSON.parse(e.data), "sse");
    });
    es.onerror = function () {
      failures += 1;
      if (!received || failures >= 3) { es.close(); startPolling(); } else setConn("wait", "reconnecting");
    };
  }

  function wire() {
    $("model-select").addEventListener("change", function (e) { state.model = e.target.value; render(); });
    $("forecast-select").addEventListener("change", function (e) { state.forecast = e.target.value; render(); });
    $("drift-select").addEventListener("change", function (e) { state.drift = e.target.value; render(); });
    window.addEventListener("resize", function () {
      Object.keys(state.charts).forEach(function (id) { state.charts[id].resize(); });
    });
  }

  wire();
  if (typeof echarts === "undefined") {
    dash.errors.push("the chart library did not load");
    setConn("down", "charts missing");
  } else {
    connect();
  }
})();
