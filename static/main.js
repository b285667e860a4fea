// Shows whether the Melody Flow API of this deployment answers. The address comes from
// config.js, which the Pulumi stack writes, so this file is the same for every stack.
(function () {
  "use strict";

  const config = window.MELODY_FLOW_CONFIG || {};
  const state = document.getElementById("api-state");
  const urlText = document.getElementById("api-url");

  function show(kind, text) {
    state.className = "state state-" + kind;
    state.textContent = text;
  }

  if (!config.apiBaseUrl) {
    show("down", "not configured (config.js missing)");
    return;
  }

  const healthUrl = config.apiBaseUrl + (config.healthPath || "/docs");
  urlText.textContent = healthUrl;

  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 8000);
  fetch(healthUrl, { method: "GET", mode: "cors", signal: controller.signal })
    .then((response) => {
      if (response.ok) {
        show("up", "online");
      } else {
        show("down", "answering with HTTP " + response.status);
      }
    })
    .catch(() => {
      // A stopped spot instance (idle stop, off-hours, interruption) lands here.
      show("down", "offline: the GPU server may be stopped");
    })
    .finally(() => clearTimeout(timer));
})();
