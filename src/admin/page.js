// The status page's live view: polls status.json and redraws the page from it, with a small
// SVG chart per route and metric. Without this script the server-rendered tables still show
// the same figures as of the page load. Data is only ever inserted as text, never as markup.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var SVG = "http://www.w3.org/2000/svg";
  var W = 300, H = 44;

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, children) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    });
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  // The same formats as the server-rendered page (admin/page.rs).
  function rate(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 100) return Math.round(v).toLocaleString("en-US");
    if (v >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }
  function ms(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 1000) return (v / 1000).toFixed(2) + " s";
    if (v >= 100) return Math.round(v) + " ms";
    if (v >= 10) return v.toFixed(1) + " ms";
    return v.toFixed(2) + " ms";
  }
  function percent(v) {
    if (v === null || v === undefined) return "–";
    var p = v * 100;
    return (p === 0 ? "0" : p < 10 ? p.toFixed(2) : p.toFixed(1)) + " %";
  }
  function span(seconds) {
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
    var m = Math.floor(seconds / 60) % 60, s = Math.floor(seconds % 60);
    function two(big, a, small, b) { return small > 0 ? big + a + " " + small + b : big + a; }
    if (d > 0) return two(d, "d", h, "h");
    if (h > 0) return two(h, "h", m, "m");
    if (m > 0) return two(m, "m", s, "s");
    return s + "s";
  }
  function clock(unixMs) {
    return new Date(unixMs).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }
  function niceMax(v, floor) {
    var max = Math.max(v, floor);
    var step = Math.pow(10, Math.floor(Math.log10(max)));
    var nice = [1, 2, 5, 10].map(function (f) { return f * step; }).find(function (n) { return n >= max; });
    return nice || max;
  }

  function setText(id, text) { var node = $(id); if (node) node.textContent = text; }
  function replace(id, node) { var old = $(id); node.id = id; if (old) old.replaceWith(node); }

  function totals(series) {
    var rps = 0, errors = 0;
    series.forEach(function (s) {
      rps += s.recent.requests_per_second;
      errors += s.recent.requests_per_second * (s.recent.error_ratio || 0);
    });
    return { rps: rps, ratio: rps > 0 ? errors / rps : null };
  }

  // Axis labels: whole numbers (the scale is 1, 2 or 5 × a power of ten, at least 1).
  function axis(v) { return v >= 1000 ? v.toLocaleString("en-US") : String(v); }

  // One chart: lines of values (nulls leave gaps), right-aligned on a window of `slots`;
  // the first line is also filled. `value` is a list of text and nodes for the head.
  function chart(label, value, lines, slots, floor, unit) {
    var max = 0;
    lines.forEach(function (line) {
      line.values.forEach(function (v) { if (v !== null && v > max) max = v; });
    });
    max = niceMax(max, floor);
    var step = W / Math.max(slots - 1, 1);
    var box = svg("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img", "aria-label": label });
    [2, H / 2].forEach(function (y) {
      box.appendChild(svg("line", { x1: 0, x2: W, y1: y, y2: y, stroke: "var(--grid)", "stroke-dasharray": "3 3", "vector-effect": "non-scaling-stroke" }));
    });
    box.appendChild(svg("line", { x1: 0, x2: W, y1: H, y2: H, stroke: "var(--line)", "vector-effect": "non-scaling-stroke" }));
    lines.forEach(function (line, index) {
      var offset = slots - line.values.length;
      var d = "", area = "", open = false, first = 0, last = 0;
      line.values.forEach(function (v, i) {
        var x = ((offset + i) * step).toFixed(2);
        if (v === null) { if (open) area += "L" + last + " " + H + "L" + first + " " + H + "Z"; open = false; return; }
        var y = (H - 1 - (Math.min(v, max) / max) * (H - 3)).toFixed(2);
        if (!open) { d += "M" + x + " " + y; area += "M" + x + " " + H + "L" + x + " " + y; first = x; open = true; }
        else { d += "L" + x + " " + y; area += "L" + x + " " + y; }
        last = x;
      });
      if (open) area += "L" + last + " " + H + "L" + first + " " + H + "Z";
      if (index === 0 && area) box.appendChild(svg("path", { d: area, fill: line.color, "fill-opacity": 0.12, stroke: "none" }));
      if (d) box.appendChild(svg("path", { d: d, fill: "none", stroke: line.color, "stroke-width": 1.5, "stroke-linejoin": "round", "vector-effect": "non-scaling-stroke" }));
    });
    return el("div", "chart", [
      el("div", "chart-head", [el("span", "label", [label]), el("span", "value", value)]),
      el("div", "plot", [box, el("span", "ymax", [axis(max) + unit])])
    ]);
  }

  // A coloured legend mark followed by `text`.
  function keyed(color, text) {
    var key = el("span", "key"); key.style.background = color;
    return el("span", "keyed", [key, text]);
  }

  function routeCard(s, route, slots, interval) {
    var rps = s.requests.map(function (n) { return n / interval; });
    var err = s.requests.map(function (n, i) { return n > 0 ? (s.errors[i] / n) * 100 : null; });
    var title = s.route === null ? "forward proxy" : s.route;
    var where = route ? (route.host || "") + route.prefix + " → " + route.upstream : "absolute-form and CONNECT";
    var r = s.recent;
    var health = route && route.targets.length ? el("div", "health", route.targets.map(function (t) {
      var pill = el("span", "pill " + healthClass(t.state), [t.name]);
      pill.title = t.name + ": " + t.state + " · " + targetDetail(t);
      return pill;
    })) : null;
    if (route && route.balance) where = (route.host || "") + route.prefix + " → " + route.targets.length + " targets, " + route.balance;
    return el("div", "route", [
      el("div", "route-head", [el("strong", null, [title]), el("span", "muted", [where])]),
      health,
      chart("Requests/s", [rate(r.requests_per_second)], [{ values: rps, color: "var(--accent)" }], slots, 1, "/s"),
      chart("5xx", [percent(r.error_ratio)], [{ values: err, color: "var(--bad)" }], slots, 1, " %"),
      chart("Latency", [keyed("var(--p50)", "p50 " + ms(r.p50_ms)), keyed("var(--p99)", "p99 " + ms(r.p99_ms))], [
        { values: s.p99_ms, color: "var(--p99)" },
        { values: s.p50_ms, color: "var(--p50)" }
      ], slots, 1, " ms"),
      el("div", "chart-foot", [el("span", null, ["−" + span(slots * interval)]), el("span", null, ["now"])])
    ]);
  }

  function render(status) {
    var traffic = status.traffic;
    var slots = Math.max(Math.round(traffic.history_seconds / traffic.interval_seconds), 2);
    var draining = status.state !== "serving";
    var pill = $("state");
    pill.className = "pill " + (draining ? "warn" : "ok");
    pill.textContent = status.state;
    setText("uptime", span((status.generated_unix_ms - status.started_unix_ms) / 1000));
    setText("updated", "updated " + clock(status.generated_unix_ms));

    var sum = totals(traffic.series);
    setText("t-rps", rate(sum.rps));
    setText("t-errors", percent(sum.ratio));
    $("t-errors").className = "value" + (sum.ratio > 0 ? " bad-text" : "");
    setText("t-open", status.connections.open.toLocaleString("en-US"));
    setText("t-parked", status.connections.parked.toLocaleString("en-US"));
    setText("t-tunnels", status.connections.tunnels.toLocaleString("en-US"));
    setText("t-websockets", status.connections.websockets.toLocaleString("en-US"));
    var all = [].concat.apply([], status.routes.map(function (route) { return route.targets; }));
    var up = all.filter(function (t) { return t.state === "healthy"; }).length;
    $("t-targets-tile").hidden = all.length === 0;
    setText("t-targets", up + " / " + all.length);
    $("t-targets").className = "value" + (up < all.length ? " bad-text" : "");
    setText("traffic-span", "last " + span(traffic.history_seconds) + " · " + traffic.interval_seconds + " s samples");

    var byName = {};
    status.routes.forEach(function (route) { if (!(route.name in byName)) byName[route.name] = route; });
    var cards = el("div", "charts");
    traffic.series.forEach(function (s) {
      cards.appendChild(routeCard(s, s.route === null ? null : byName[s.route], slots, traffic.interval_seconds));
    });
    if (!traffic.series.length) cards.appendChild(el("p", "empty", ["No routes and no forward listener."]));
    cards.dataset.samples = traffic.samples;
    replace("charts", cards);

    var rows = el("tbody");
    status.routes.forEach(function (route) {
      var series = traffic.series.find(function (s) { return s.route === route.name; });
      var upstream = route.balance ? route.targets.length + " targets, " + route.balance : route.upstream;
      rows.appendChild(routeRow(route.name, (route.host || "") + route.prefix, upstream, series, route));
      route.targets.forEach(function (t) { rows.appendChild(targetRow(t)); });
    });
    var forward = traffic.series.find(function (s) { return s.route === null; });
    if (forward) rows.appendChild(routeRow("forward proxy", "absolute-form, CONNECT", "the request's target", forward, null));
    if (!rows.children.length) rows.appendChild(el("tr", null, [emptyCell(6, "No routes configured.")]));
    replace("routes-body", rows);

    var listeners = el("tbody");
    status.listeners.forEach(function (l) {
      listeners.appendChild(el("tr", null, [
        el("td", "name mono", [l.address]),
        el("td", null, l.modes.split("+").map(function (m) { return el("span", "tag", [m]); })),
        el("td", null, [l.protocol]),
        el("td", null, [l.auth ? "required" : "–"])
      ]));
    });
    replace("listeners-body", listeners);

    var reload = status.reload;
    if (!reload) {
      replace("reload-body", el("p", "empty", ["No reload since start (" + clock(status.started_unix_ms) + ")."]));
    } else {
      var ok = reload.result === "applied";
      replace("reload-body", el("div", null, [
        el("span", "pill " + (ok ? "ok" : "bad"), [reload.result]),
        el("span", "muted small", ["  " + clock(reload.at_unix_ms)]),
        el("pre", "message", [reload.message])
      ]));
    }
    // The AI usage card, as admin/ai_card.rs renders it; hidden while no route serves AI.
    var ai = status.ai_usage;
    var card = $("ai-card");
    if (card) card.hidden = !ai;
    if (ai) replace("ai-body", aiBody(ai));
  }

  function count(n) { return n.toLocaleString("en-US"); }
  function times(n, noun) { return count(n) + " " + noun + (n === 1 ? "" : "s"); }
  function th(cls, text) { return el("th", cls, [text]); }

  function countsTable(title, rows) {
    var body = el("tbody", null, rows.map(function (r) {
      return el("tr", null, [
        el("td", "name", [r.name === "" ? "none" : r.name]),
        el("td", "num", [count(r.requests)]),
        el("td", "num", [count(r.input_tokens)]),
        el("td", "num", [count(r.output_tokens)]),
        el("td", "num hide-narrow", [count(r.cached_tokens)])
      ]);
    }));
    if (!rows.length) body.appendChild(el("tr", null, [emptyCell(5, "No AI requests yet.")]));
    return el("div", "scroll", [el("table", "counts", [
      el("thead", null, [el("tr", null, [th(null, title), th("num", "Requests"), th("num", "Input tokens"),
        th("num", "Output tokens"), th("num hide-narrow", "Cached")])]),
      body
    ])]);
  }

  function keyDetail(k) {
    var parts = [];
    if (k.back_in_ms !== null) parts.push("back in " + span(k.back_in_ms / 1000));
    parts.push(times(k.cooldowns, "rest"));
    parts.push(times(k.removals, "removal"));
    return parts.join(" · ");
  }

  function aiBody(ai) {
    var keys = el("tbody", null, []);
    ai.routes.forEach(function (route) {
      var note = el("td", "muted small", [count(route.fallbacks) + " fallbacks"]);
      note.colSpan = 2;
      keys.appendChild(el("tr", null, [el("td", "name", [route.route]), note]));
      route.keys.forEach(function (k) {
        var cls = k.state === "ready" ? "ok" : k.state === "removed" ? "bad" : "warn";
        keys.appendChild(el("tr", "target", [
          el("td", null, []),
          el("td", "mono", [k.key_id]),
          el("td", "num", [el("span", "pill " + cls, [k.state]), " ", el("span", "muted small", [keyDetail(k)])])
        ]));
      });
    });
    return el("div", null, [
      countsTable("Model", ai.models.map(function (m) { return Object.assign({ name: m.model }, m); })),
      countsTable("Virtual key", ai.virtual_keys),
      el("div", "scroll", [el("table", null, [
        el("thead", null, [el("tr", null, [th(null, "Route"), th(null, "Provider key"), th("num", "State")])]),
        keys
      ])])
    ]);
  }

  // The same words as the server-rendered page (`health_class`, `target_detail` in page.rs).
  function healthClass(state) { return state === "healthy" ? "ok" : state === "down" ? "bad" : "warn"; }
  function targetDetail(t) {
    var parts = [];
    if (t.state === "down") parts.push("failing its checks");
    else if (t.state === "ejected") parts.push("back in " + span((t.ejected_for_ms || 0) / 1000));
    else if (t.state === "cooling") parts.push("back in " + span((t.cooling_for_ms || 0) / 1000));
    else if (t.consecutive_failures > 0) parts.push(t.consecutive_failures + " failed in a row");
    parts.push(t.in_flight + " in flight");
    return parts.join(" · ");
  }

  function targetRow(t) {
    var cell = el("td", "num", [el("span", "pill " + healthClass(t.state), [t.state]), " ", el("span", "muted small", [targetDetail(t)])]);
    cell.colSpan = 4;
    return el("tr", "target", [
      el("td", null, [el("div", "target-name", [t.name])]),
      el("td", "mono wrap hide-narrow", [t.url, " ", el("span", "tag", ["tier " + t.tier]), el("span", "tag", ["weight " + t.weight])]),
      cell
    ]);
  }

  function emptyCell(span, text) { var td = el("td", "empty", [text]); td.colSpan = span; return td; }

  function routeRow(name, match, upstream, series, route) {
    var r = series ? series.recent : null;
    var err = r && r.error_ratio > 0;
    var tags = route ? route.upgrades.map(function (u) { return el("span", "tag", [u]); }) : [];
    return el("tr", null, [
      el("td", null, [el("div", "name", [name]), el("div", "match mono", [match])]),
      el("td", "mono wrap hide-narrow", [upstream, " "].concat(tags)),
      el("td", "num", [r ? rate(r.requests_per_second) : "–"]),
      el("td", "num" + (err ? " bad-text" : ""), [r ? percent(r.error_ratio) : "–"]),
      el("td", "num hide-narrow", [r ? ms(r.p50_ms) : "–"]),
      el("td", "num", [r ? ms(r.p99_ms) : "–"])
    ]);
  }

  function poll() {
    fetch("status.json", { cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (status) { render(status); document.body.dataset.live = "yes"; })
      .catch(function () {
        var pill = $("state");
        pill.className = "pill bad";
        pill.textContent = "unreachable";
        document.body.dataset.live = "no";
      })
      .then(function () { setTimeout(poll, POLL_MS); });
  }
  poll();
})();
