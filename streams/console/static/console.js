// Escalation console: live countdowns, and no refresh of a list while someone types in it.
(function () {
  "use strict";
  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function span(seconds) {
    var s = Math.abs(Math.round(seconds));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + "h " + pad(m) + "m " : m + "m ") + pad(r) + "s";
  }
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var left = parseFloat(el.getAttribute("data-deadline")) - now;
      el.textContent = left >= 0 ? span(left) + " left" : "overdue " + span(left);
      el.classList.toggle("overdue", left < 0);
      el.classList.toggle("soon", left >= 0 && left < 60);
    });
  }
  setInterval(tick, 1000);
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSwap", tick);
  document.addEventListener("htmx:configRequest", function (evt) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) { evt.detail.headers["X-CSRF-Token"] = meta.getAttribute("content"); }
  });
  // A session that ended (expired, signed out elsewhere): back to the sign-in page.
  document.addEventListener("htmx:responseError", function (evt) {
    if (evt.detail.xhr && evt.detail.xhr.status === 401) {
      window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
    }
  });
  // A polled list is not replaced while a field inside it has the focus.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var el = evt.detail.elt;
    if (!el.hasAttribute("data-poll")) { return; }
    var active = document.activeElement;
    if (active && el.contains(active) && (active.tagName === "INPUT" || active.tagName === "TEXTAREA")) {
      evt.preventDefault();
    }
  });
})();
