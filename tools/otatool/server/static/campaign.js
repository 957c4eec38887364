// Keeps a campaign's page current while it is open: fetches the changing
// part again every two seconds and swaps it in when it changed. The server
// renders (and escapes) that part, so no device's words pass through here.
// It goes on after a stop: devices already downloading still report.
// A screen reader hears the new counts (the bar's label), not the whole table.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var note = document.getElementById("live-note");
  var status = document.getElementById("live-status");
  if (!live) {
    return;
  }
  var url = live.getAttribute("data-live-url");
  var timer = null;

  function stop(message) {
    window.clearInterval(timer);
    note.textContent = message;
    note.hidden = false;
  }

  function refresh() {
    fetch(url, {credentials: "same-origin", cache: "no-store"}).then(function (response) {
      if (response.redirected || response.status === 403) {
        stop("You are signed out: sign in again to see new states.");
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (html !== null && html !== undefined && html !== live.innerHTML) {
        live.innerHTML = html;
        var bar = live.querySelector("svg.bar");
        status.textContent = bar ? "Now " + bar.getAttribute("aria-label") : "";
      }
    }).catch(function () {
      note.textContent = "The server cannot be reached; trying again.";
      note.hidden = false;
    });
  }

  timer = window.setInterval(refresh, 2000);
})();
