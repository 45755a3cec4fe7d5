// etcron dashboard: follow a run's output live (server-sent events), open a
// requested run once it starts, confirm dangerous forms. No dependencies.
"use strict";
(function () {
  function follow(pre) {
    var url = pre.getAttribute("data-follow");
    var errPre = document.getElementById("stderr");
    var source = new EventSource(url);
    source.addEventListener("output", function (ev) {
      var seg = JSON.parse(ev.data);
      var span = document.createElement("span");
      span.className = seg.stream;
      span.textContent = seg.text;
      pre.appendChild(span);
      if (seg.stream === "stderr" && errPre) { errPre.appendChild(document.createTextNode(seg.text)); }
      if (pre.scrollHeight - pre.scrollTop - pre.clientHeight < 80) { pre.scrollTop = pre.scrollHeight; }
    });
    source.addEventListener("end", function (ev) {
      source.close();
      var end = JSON.parse(ev.data);
      var status = document.getElementById("run-status");
      if (status) { status.textContent = end.status; status.className = "status " + end["class"]; }
      var exit = document.getElementById("run-exit");
      if (exit && end.exit_code !== null) { exit.textContent = String(end.exit_code); }
      var took = document.getElementById("run-duration");
      if (took) { took.textContent = end.duration; }
      var msg = document.getElementById("run-message");
      if (msg && end.message) { msg.textContent = end.message; }
      var live = document.getElementById("live");
      if (live) { live.textContent = "ended"; live.className = "tag"; }
    });
  }
  function awaitRun(el) {
    var source = new EventSource(el.getAttribute("data-await"));
    source.addEventListener("run", function (ev) {
      source.close();
      window.location.replace(JSON.parse(ev.data).url);
    });
    source.addEventListener("timeout", function (ev) {
      source.close();
      el.textContent = JSON.parse(ev.data).message;
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var pre = document.querySelector("pre[data-follow]");
    if (pre) { follow(pre); }
    var waiting = document.querySelector("[data-await]");
    if (waiting) { awaitRun(waiting); }
  });
})();
