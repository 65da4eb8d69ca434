// The portal's card form (pay, or save a card), on Stripe.js's Card Element.
//
// Flow that works on Stripe and on localstripe's stand-in Stripe.js
// (docs/decisions/0005-payments.md): confirmCardSetup(SetupIntent) turns the card into
// a payment method; pay: the server confirms the PaymentIntent with it; if the bank
// wants 3-D Secure, confirmCardPayment(client_secret) does that step; then the
// payment page shows the result the webhook (or a sync with Stripe) records.
(function () {
  'use strict';
  var form = document.getElementById('pay-form') || document.getElementById('card-form');
  if (!form || typeof Stripe === 'undefined') return;
  var paying = form.id === 'pay-form';
  var stripe = Stripe(form.dataset.stripeKey);
  var card = stripe.elements().create('card', {
    style: {base: {fontSize: '16px', color: '#1b2430', '::placeholder': {color: '#8a96a3'}}},
  });
  card.mount('#card-element');
  var button = document.getElementById('pay-button');
  var progress = document.getElementById('pay-progress');
  var errorBox = document.getElementById('pay-errors');
  var amountErrors = document.getElementById('id_amount_error');
  var paymentMethodId = null;  // kept while the card is unchanged, e.g. after a typo in the amount
  var busy = false;
  card.on('change', function () { paymentMethodId = null; });

  function say(text) { progress.textContent = text || ''; progress.hidden = !text; }
  function clearErrors() {
    errorBox.hidden = true; errorBox.textContent = '';
    if (amountErrors) { amountErrors.hidden = true; amountErrors.textContent = ''; }
  }
  function showError(text, list) {
    var target = list || errorBox;
    var item = document.createElement(list ? 'li' : 'p');
    item.textContent = text;
    target.appendChild(item);
    target.hidden = false;
    if (!list) target.scrollIntoView({block: 'nearest'});
  }
  function setBusy(on) { busy = on; button.disabled = on; if (!on) say(''); }

  function poll(url, fallback) {
    var tries = 0;
    function once() {
      fetch(url, {headers: {Accept: 'application/json'}, credentials: 'same-origin'})
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (data.status !== 'requires_action' || ++tries > 40) { window.location.assign(data.payment_url); return; }
          setTimeout(once, 1500);
        })
        .catch(function () { window.location.assign(fallback); });
    }
    once();
  }

  async function cardToPaymentMethod() {
    if (paymentMethodId) return paymentMethodId;
    var result = await stripe.confirmCardSetup(form.dataset.setupSecret, {payment_method: {card: card}});
    if (result.error) {
      showError(result.error.message || 'Your card could not be used.');
      return null;
    }
    var pm = result.setupIntent.payment_method;
    paymentMethodId = typeof pm === 'string' ? pm : pm.id;
    return paymentMethodId;
  }

  form.addEventListener('submit', async function (event) {
    event.preventDefault();
    if (busy) return;  // one payment per click, even on a double tap
    setBusy(true);
    clearErrors();
    say(form.dataset.msgChecking);
    try {
      var pm = await cardToPaymentMethod();
      if (!pm) { setBusy(false); return; }
      form.elements.payment_method_id.value = pm;
      if (!paying) { form.submit(); return; }
      say(form.dataset.msgPaying);
      var response = await fetch(form.action, {
        method: 'POST', body: new FormData(form), credentials: 'same-origin',
        headers: {Accept: 'application/json'},
      });
      var data = await response.json();
      if (data.status === 'invalid') {
        Object.keys(data.errors).forEach(function (field) {
          data.errors[field].forEach(function (m) { showError(m, field === 'amount' ? amountErrors : null); });
        });
        setBusy(false);
        return;
      }
      if (data.status === 'failed') {
        // Nothing was charged; the next try is a new payment with a new card.
        form.elements.key.value = data.key;
        form.dataset.setupSecret = data.setup_client_secret;
        paymentMethodId = null;
        showError(form.dataset.msgFailed + ' ' + data.message);
        showError(form.dataset.msgUnchanged);
        setBusy(false);
        return;
      }
      if (data.status === 'requires_action') {
        say(form.dataset.msgConfirm);
        await stripe.confirmCardPayment(data.client_secret);
        say(form.dataset.msgWaiting);
        poll(data.status_url, data.payment_url);
        return;
      }
      window.location.assign(data.payment_url);
    } catch (err) {
      showError(form.dataset.msgError);
      setBusy(false);
    }
  });
})();
