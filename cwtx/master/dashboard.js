// cwtx dashboard: every few seconds, fetch the page again (with the cookie)
// and swap in its <main>, so the view updates without a reload. Without
// JavaScript, a <meta> refresh in <noscript> reloads the page instead.
"use strict";
(function () {
  var every = 1000 * (Number(document.body.dataset.refresh) || 3);
  function refresh() {
    fetch(location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("content");
        var current = document.getElementById("content");
        if (fresh && current) current.replaceWith(document.importNode(fresh, true));
        document.body.dataset.refreshed = String(Date.now());
        document.body.classList.remove("stale");
      })
      .catch(function () {
        document.body.classList.add("stale"); // the master is gone, or the token changed
      })
      .finally(function () {
        setTimeout(refresh, every);
      });
  }
  setTimeout(refresh, every);
})();
