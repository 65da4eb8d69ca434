// The payment page while a payment waits: ask the server every 2 s and reload once
// it has a result (the webhook, or Stripe asked directly after a few seconds).
(function () {
  'use strict';
  var panel = document.getElementById('payment-status');
  if (!panel || !panel.dataset.pollUrl) return;
  var started = Date.now();
  var waitFor = panel.dataset.status;
  function poll() {
    fetch(panel.dataset.pollUrl, {headers: {Accept: 'application/json'}, credentials: 'same-origin'})
      .then(function (r) { return r.json(); })
      .then(function (data) {
        if (data.status !== waitFor) { window.location.reload(); return; }
        // Bank debits stay "processing" for days: stop asking after a few minutes.
        if (Date.now() - started < 5 * 60 * 1000) setTimeout(poll, 2000);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 1500);
})();
