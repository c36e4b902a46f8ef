// leadhook console: the live event view (server-sent events) and the delivery charts (uPlot).
// Loaded from this server only; no inline script is needed anywhere (see the page's CSP).
(function () {
  "use strict";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function startLive(section) {
    var list = document.getElementById("live-events");
    var state = document.getElementById("live-state");
    var empty = document.getElementById("live-empty");
    var lead = (section.getAttribute("data-lead") || "").trim();  // as the log trims it
    var type = section.getAttribute("data-type");
    var url = section.getAttribute("data-stream");
    var after = section.getAttribute("data-after");
    if (after) url += "?after=" + encodeURIComponent(after);
    var source = new EventSource(url);
    // A stream ends every 30 s by design and the browser reconnects at once: "reconnecting"
    // is said only if the connection stays away (a status region read out every 30 s else).
    var away = null;
    source.onopen = function () {
      if (away) { clearTimeout(away); away = null; }
      var connected = section.getAttribute("data-connected");
      if (state.textContent !== connected) state.textContent = connected;
    };
    source.onerror = function () {
      if (!away) {
        away = setTimeout(function () {
          state.textContent = section.getAttribute("data-disconnected");
        }, 2000);
      }
      // The browser gives up on a stream answered with something else than events (the
      // sign-in page, after a sign-out): the page itself then goes where it has to.
      if (source.readyState === EventSource.CLOSED) location.reload();
    };
    source.addEventListener("signed-out", function () {
      source.close();
      location.reload();  // the session ended (signed out, key revoked): to the sign-in form
    });
    source.addEventListener("lead-event", function (message) {
      var e = JSON.parse(message.data);
      if ((lead && e.entity_id !== lead) || (type && e.event_type !== type)) return;
      if (empty) { empty.remove(); empty = null; }
      var item = el("li", { "class": "event-item new", "data-event-id": e.event_id });
      var details = el("details");
      var summary = el("summary");
      summary.appendChild(el("strong", {}, e.label));
      summary.appendChild(document.createTextNode(" "));
      summary.appendChild(el("code", {}, e.event_type));
      summary.appendChild(document.createTextNode(" v" + e.entity_version + " · "));
      summary.appendChild(el("time", { "class": "muted" }, e.when));
      details.appendChild(summary);
      details.appendChild(el("pre", { "class": "json" }, e.json));
      item.appendChild(details);
      // Beside the summary, not in it (a link inside <summary>: a control in a control).
      var href = "/console/leads/" + encodeURIComponent(e.entity_id);
      item.appendChild(el("a", { "class": "event-lead", href: href }, e.entity_id));
      list.insertBefore(item, list.firstChild);
      while (list.children.length > 200) list.removeChild(list.lastChild);
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function drawCharts(box) {
    var data = JSON.parse(document.getElementById("chart-data").textContent);
    if (!window.uPlot || !data.length) return;
    var width = Math.max(260, Math.min(box.clientWidth || 600, 1100));
    var rateLabel = box.getAttribute("data-rate");
    var failLabel = box.getAttribute("data-failures");
    var zone = box.getAttribute("data-tz");  // times on the axis in the tenant's timezone
    var colors = ["#1f5fbf", "#1b7a3d", "#8a4fd6", "#b36b00", "#0f7c8c", "#b3261e"];
    // Times in the page's language and the tenant's timezone, on a 24-hour clock: uPlot's own
    // are US English ("12/6 10am") whatever the page's language.
    var lang = document.documentElement.lang || "en";
    function formatter(options) {
      try {
        return new Intl.DateTimeFormat(lang, Object.assign({ hourCycle: "h23", timeZone: zone || undefined }, options));
      } catch (e) {  // a zone this browser does not know: its own
        return new Intl.DateTimeFormat(lang, Object.assign({ hourCycle: "h23" }, options));
      }
    }
    var tick = formatter({ hour: "2-digit", minute: "2-digit" });
    var full = formatter({ year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
    function chart(title, values, label, scale) {
      var wrap = el("div", { "class": "chart-box" });
      wrap.appendChild(el("h3", {}, title));
      box.appendChild(wrap);
      var series = [{
        label: box.getAttribute("data-time") || "Time",
        value: function (u, ts) { return ts == null ? "–" : full.format(new Date(ts * 1e3)); },
      }];
      data.forEach(function (s, i) {
        var name = s.label.length > 60 ? s.label.slice(0, 59) + "…" : s.label;  // a long URL
        series.push({ label: name, stroke: colors[i % colors.length], width: 2, spanGaps: false });
      });
      var columns = [data[0].times].concat(data.map(values));
      new window.uPlot({
        width: width, height: 180,
        tzDate: function (ts) { return zone ? window.uPlot.tzDate(new Date(ts * 1e3), zone) : new Date(ts * 1e3); },
        series: series,
        scales: { y: scale },
        axes: [
          { values: function (u, splits) { return splits.map(function (ts) { return tick.format(new Date(ts * 1e3)); }); } },
          { label: label, size: 60 },
        ],
      }, columns, wrap);
    }
    chart(rateLabel, function (s) { return s.rate; }, rateLabel, { range: function (u, min, max) { return [0, max > 0 ? max * 1.15 : 1]; } });
    chart(failLabel, function (s) { return s.failure_pct; }, failLabel, { range: [0, 100] });
  }

  function init() {
    // A page answered to a POST (a new subscription, a rotated secret) shows its real address,
    // so that reloading it reads the page again rather than repeating the POST.
    var canonical = document.body.getAttribute("data-canonical");
    if (canonical && canonical !== location.pathname + location.search) {
      history.replaceState(null, "", canonical);
    }
    // The language switch returns to the page as it is now: a search typed since the page
    // loaded (htmx updates the address) is part of it.
    var switcher = document.querySelector('form[action="/console/lang"] input[name="next"]');
    if (switcher) {
      switcher.form.addEventListener("submit", function () {
        switcher.value = location.pathname + location.search;
      });
    }
    // htmx swaps nothing for an error answer: a test send or a search refused (a subscription
    // deleted meanwhile, a server error) said nothing, and an earlier result stayed as if new.
    document.body.addEventListener("htmx:responseError", function (evt) {
      var target = evt.detail.target;
      if (!target) return;
      var said = document.body.getAttribute("data-request-failed") || "The request failed";
      target.replaceChildren(
        el("p", { "class": "error", "role": "alert" }, said + " (HTTP " + evt.detail.xhr.status + ")")
      );
    });
    var live = document.getElementById("live");
    if (live) startLive(live);
    var charts = document.getElementById("charts");
    if (charts) drawCharts(charts);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
