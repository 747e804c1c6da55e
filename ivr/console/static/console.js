/* ivr operations console: the little client code the pages need (no inline scripts: CSP script-src 'self').
 *
 * - sends the session's CSRF token with every htmx request (header X-CSRF-Token, from <meta name=csrf-token>);
 * - shows times in the operator's time zone and ticks durations and countdowns (all client-side: the server
 *   renders UTC <time datetime> elements and is never polled);
 * - merges live rows/cards the server streams (SSE + htmx out-of-band swaps) into lists by id ("upsert");
 * - keeps live streams exact across reconnects: the browser resends Last-Event-ID by itself, and when the SSE
 *   extension has to open a new EventSource, the URL carries the last id seen (?after=…).
 * Nothing here builds HTML from text: every fragment arrives rendered (and escaped) by the server.
 */
(function () {
  "use strict";

  // ---- time formatting -----------------------------------------------------------------------------------
  var zone = (function () {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { return ""; }
  })();
  var formats = {
    datetime: new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"
    }),
    time: new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" }),
    date: new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" })
  };

  function clock(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    var mm = (h && m < 10 ? "0" : "") + m, ss = (s < 10 ? "0" : "") + s;
    return (h ? h + ":" : "") + mm + ":" + ss;
  }

  function localize(root) {
    if (!root || !root.querySelectorAll) return;
    var nodes = root.matches && root.matches("time[data-fmt]") ? [root] : [];
    nodes = nodes.concat(Array.prototype.slice.call(root.querySelectorAll("time[data-fmt]")));
    nodes.forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      var fmt = formats[el.getAttribute("data-fmt")] || formats.datetime;
      el.textContent = fmt.format(when);
      el.title = when.toISOString().replace(".000Z", "Z") + (zone ? " · shown in " + zone : "");
    });
    if (root.querySelectorAll) {
      root.querySelectorAll("input[name=tz]").forEach(function (el) { if (!el.value) el.value = zone; });
      if (zone) root.querySelectorAll("[data-zone]").forEach(function (el) { el.textContent = zone; });
    }
    tick();
  }

  // Durations (data-since) count up, deadlines (data-countdown) count down; [data-expire-at] leave the page.
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var since = Date.parse(el.getAttribute("data-since"));
      if (!isNaN(since)) el.textContent = clock((now - since) / 1000);
    });
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      var until = Date.parse(el.getAttribute("data-countdown"));
      if (isNaN(until)) return;
      var left = (until - now) / 1000;
      el.textContent = left > 0 ? clock(left) : "time is up";
      var box = el.closest(".deadline");
      if (box) box.classList.toggle("late", left <= 10);
    });
    document.querySelectorAll("[data-expire-at]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("data-expire-at"));
      if (!isNaN(at) && at <= now) el.remove();
    });
  }

  // ---- live lists: upsert streamed rows by id ----------------------------------------------------------------
  function sortValue(el) { return parseFloat(el.getAttribute("data-sort-value") || "0") || 0; }

  function upsert(container, child) {
    var old = child.id ? document.getElementById(child.id) : null;
    if (old && old.parentNode === container) {
      old.replaceWith(child);
    } else {
      if (old) old.remove();
      if (container.hasAttribute("data-sort")) {
        var value = sortValue(child), before = null;
        Array.prototype.some.call(container.children, function (other) {
          if (sortValue(other) > value) { before = other; return true; }
          return false;
        });
        container.insertBefore(child, before);
      } else if (container.getAttribute("data-upsert") === "prepend") {
        container.insertBefore(child, container.firstElementChild);
      } else {
        container.appendChild(child);
      }
    }
    htmx.process(child);
    localize(child);
  }

  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var target = evt.detail.target;
    if (!target || !target.hasAttribute || !target.hasAttribute("data-upsert")) return;
    var fragment = evt.detail.fragment;
    var stick = target.scrollHeight - target.scrollTop - target.clientHeight < 40;
    Array.prototype.slice.call(fragment.children || []).forEach(function (child) { upsert(target, child); });
    evt.detail.shouldSwap = false;
    if (target.hasAttribute("data-follow") && stick) target.scrollTop = target.scrollHeight;
    updateCounts();
  });

  function updateCounts() {
    document.querySelectorAll("[data-count-of]").forEach(function (el) {
      var list = document.getElementById(el.getAttribute("data-count-of"));
      if (list) el.textContent = list.querySelectorAll(el.getAttribute("data-count-what") || ":scope > *").length;
    });
  }

  // ---- CSRF for htmx requests ----------------------------------------------------------------------------------
  document.addEventListener("htmx:configRequest", function (evt) {
    var meta = document.querySelector("meta[name=csrf-token]");
    if (meta && meta.content) evt.detail.headers["X-CSRF-Token"] = meta.content;
  });

  // A refused action (403, 409…) shows its message where the action was, instead of failing silently.
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var xhr = evt.detail.xhr, status = xhr && xhr.status;
    var type = (xhr && xhr.getResponseHeader("Content-Type")) || "";
    if (status >= 400 && type.indexOf("text/html") === 0) {
      evt.detail.shouldSwap = true;
      evt.detail.isError = false;
    }
  });

  // ---- copy a new operator's login token (shown once) ------------------------------------------------------------
  // navigator.clipboard needs a secure context (https or localhost); elsewhere, or when it is refused, the token
  // is selected so the operator can press Ctrl+C / Cmd+C.
  document.addEventListener("click", function (evt) {
    var button = evt.target.closest ? evt.target.closest("[data-copy]") : null;
    if (!button) return;
    var id = button.getAttribute("data-copy"), source = document.getElementById(id);
    if (!source) return;
    var status = document.querySelector('[data-copy-status="' + id + '"]');
    function say(text) { if (status) status.textContent = text; }
    function select() {
      var range = document.createRange(), selection = window.getSelection();
      range.selectNodeContents(source);
      selection.removeAllRanges();
      selection.addRange(range);
      say("The token is selected: press Ctrl+C (Cmd+C on a Mac) to copy it.");
    }
    var text = source.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () {
        button.textContent = "Copied";
        say("Copied to the clipboard.");
      }, select);
    } else {
      select();
    }
  });

  // ---- exact resumption of live streams -------------------------------------------------------------------------
  var lastIds = {};
  function withAfter(url, id) {
    var parts = url.split("?"), query = new URLSearchParams(parts[1] || "");
    query.set("after", id);
    return parts[0] + "?" + query.toString();
  }
  function connState(up) {
    document.querySelectorAll(".conn").forEach(function (el) {
      el.classList.toggle("up", up);
      el.classList.toggle("down", !up);
      el.title = up ? "Live: connected" : "Reconnecting…";
    });
  }
  function createEventSource(url) {
    var key = url.split("?")[0];
    var source = new EventSource(lastIds[key] ? withAfter(url, lastIds[key]) : url, { withCredentials: true });
    source.addEventListener("update", function (e) { if (e.lastEventId) lastIds[key] = e.lastEventId; });
    source.addEventListener("reload", function () { source.close(); window.location.reload(); });
    source.addEventListener("open", function () { connState(true); });
    source.addEventListener("error", function () { connState(false); });
    return source;
  }

  function start() {
    if (window.htmx) htmx.createEventSource = createEventSource;
    localize(document);
    updateCounts();
    setInterval(tick, 1000);
    if (window.htmx) htmx.onLoad(function (elt) { localize(elt); updateCounts(); });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  // The SSE extension creates its EventSources when htmx processes the body; take over the factory first.
  if (window.htmx) htmx.createEventSource = createEventSource;
})();
