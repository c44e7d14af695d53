// Live updates: the server says when what it read changed (Server-Sent Events); the page then
// fetches its own main content again and swaps it in. No framework, no external script.
(function () {
  if (!window.EventSource) return;
  var live = document.getElementById("live");
  var shown = document.body.getAttribute("data-version");
  var source = new EventSource("/updates");
  source.onmessage = function (event) {
    if (event.data === shown) return;
    fetch(location.pathname + "?fragment=1", {headers: {"Accept": "text/html"}})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var open = Array.prototype.map.call(document.querySelectorAll("details[open] summary"),
                                            function (s) { return s.textContent; });
        document.getElementById("main").innerHTML = html;
        document.querySelectorAll("details summary").forEach(function (s) {
          if (open.indexOf(s.textContent) >= 0) s.parentNode.open = true;
        });
        shown = event.data;
        document.body.setAttribute("data-version", shown);
        live.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
      })
      .catch(function () { live.textContent = "Could not refresh; retrying on the next change."; });
  };
  source.onerror = function () { live.textContent = "Reconnecting to the dashboard…"; };
})();
