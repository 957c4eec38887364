// Keeps a campaign's page current while it is open: fetches the changing
// part again every two seconds and swaps it in when it changed. The server
// renders (and escapes) that part, so no device's words pass through here.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var note = document.getElementById("live-note");
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
      }
    }).catch(function () {
      note.textContent = "The server cannot be reached; trying again.";
      note.hidden = false;
    });
  }

  timer = window.setInterval(refresh, 2000);
})();
