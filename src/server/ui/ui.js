// Follows a running job's log on its page: the lines the daemon sends as the job writes them
// are added as text (never as HTML); at the job's end its state, exit code and reason are
// shown and the cancel button goes.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log || log.dataset.running !== "1" || !window.EventSource) {
    return;
  }
  var source = new EventSource("/ui/jobs/" + log.dataset.job + "/log?from=" + log.dataset.offset);
  source.addEventListener("log", function (e) {
    log.appendChild(document.createTextNode(JSON.parse(e.data) + "\n"));
    if (window.innerHeight + window.scrollY >= document.body.offsetHeight - 80) {
      window.scrollTo(0, document.body.scrollHeight);
    }
  });
  source.addEventListener("end", function (e) {
    source.close();
    var end = JSON.parse(e.data);
    var state = document.querySelector("#state .state");
    if (state) {
      state.textContent = end.state;
      state.className = "state state-" + end.state;
    }
    var live = document.getElementById("live");
    if (live) {
      live.textContent = "Ended: " + end.state + ".";
    }
    var exit = document.getElementById("exit");
    if (exit) {
      exit.textContent = end.exit_code === null ? "" : String(end.exit_code);
    }
    var reason = document.getElementById("reason");
    if (reason) {
      reason.textContent = end.reason === null ? "" : end.reason;
    }
    var cancel = document.querySelector("form[action$='/cancel']");
    if (cancel) {
      cancel.remove();
    }
    log.dataset.running = "0";
  });
})();
