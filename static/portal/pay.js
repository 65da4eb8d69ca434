// The portal's payment forms: pay (#pay-form), save a card (#card-form) or a bank
// account (#bank-form), on Stripe.js.
//
// Card and SEPA Direct Debit, on Stripe and on localstripe's stand-in Stripe.js
// (docs/decisions/0006-tenant-portal.md): the SetupIntent is confirmed in the browser
// (confirmCardSetup / confirmSepaDebitSetup), which turns the card or IBAN (with the
// SEPA mandate the tenant accepts) into a payment method; the server then confirms the
// PaymentIntent with it. A card whose bank wants 3-D Secure comes back
// requires_action and confirmCardPayment finishes it; a SEPA debit comes back
// processing (it takes days).
//
// ACH (us_bank_account), real Stripe.js only: the server creates the PaymentIntent,
// collectBankAccountForPayment links the account (Financial Connections) and
// confirmUsBankAccountPayment confirms it; saving one for autopay uses
// collectBankAccountForSetup + confirmUsBankAccountSetup. localstripe's stand-in has
// neither, nor an IBAN Element: there a plain IBAN input stands in for the Element
// (the IBAN still goes to Stripe only) and the ACH option says it is unavailable.
(function () {
  'use strict';
  var forms = ['pay-form', 'card-form', 'bank-form']
    .map(function (id) { return document.getElementById(id); })
    .filter(Boolean);
  if (!forms.length || typeof Stripe === 'undefined') return;
  var stripe = Stripe(forms[0].dataset.stripeKey);
  var hasIbanElement = typeof stripe.confirmSepaDebitPayment === 'function';
  var canPayAch = typeof stripe.collectBankAccountForPayment === 'function' &&
    typeof stripe.confirmUsBankAccountPayment === 'function';
  var canSaveAch = typeof stripe.collectBankAccountForSetup === 'function' &&
    typeof stripe.confirmUsBankAccountSetup === 'function';
  var STYLE = {base: {fontSize: '16px', color: '#1b2430', '::placeholder': {color: '#8a96a3'}}};
  forms.forEach(wire);

  function wire(form) {
    var paying = form.id === 'pay-form';
    var msg = form.dataset;
    var button = form.querySelector('button[type=submit]');
    var progress = form.querySelector('.progress-note');
    var errorBox = form.querySelector('[data-errors]');
    var amountErrors = form.querySelector('#id_amount_error');
    var methodErrors = form.querySelector('#id_method_error');
    var keep = form.querySelector('[data-keep]');
    var paymentMethodId = null;  // kept while the details are unchanged, e.g. after a typo in the amount
    var busy = false;
    var forget = function () { paymentMethodId = null; };

    var card = null;
    var cardBox = form.querySelector('#card-element');
    if (cardBox) {
      card = stripe.elements().create('card', {style: STYLE});
      card.mount(cardBox);
      card.on('change', forget);
    }
    var iban = null, ibanInput = null;
    var ibanBox = form.querySelector('#iban-element');
    if (ibanBox && hasIbanElement) {
      iban = stripe.elements().create('iban', {style: STYLE, supportedCountries: ['SEPA'], placeholderCountry: 'DE'});
      iban.mount(ibanBox);
      iban.on('change', forget);
    } else if (ibanBox) {
      ibanInput = document.createElement('input');
      ibanInput.type = 'text';
      ibanInput.id = 'iban-input';
      ibanInput.autocomplete = 'off';
      ibanInput.placeholder = 'DE89 3704 0044 0532 0130 00';
      ibanInput.setAttribute('aria-label', 'IBAN');
      ibanInput.addEventListener('input', forget);
      ibanBox.appendChild(ibanInput);
    }

    function currentMethod() {
      var field = form.elements.method;
      return (field && field.value) || form.dataset.method || 'card';
    }
    function panelOf(method) { return form.querySelector('[data-method-panel="' + method + '"]') || form; }
    function showPanels() {
      var method = currentMethod();
      form.querySelectorAll('[data-method-panel]').forEach(function (panel) {
        panel.hidden = panel.dataset.methodPanel !== method;
      });
      var achOff = method === 'us_bank_account' && !(paying ? canPayAch : canSaveAch);
      var note = panelOf('us_bank_account').querySelector('[data-unavailable]');
      if (note) note.hidden = !achOff;
      if (keep) {
        // An ACH account is kept for autopay from the payment methods page.
        keep.hidden = paying && method === 'us_bank_account';
        if (keep.hidden) keep.querySelector('input').checked = false;
      }
      paymentMethodId = null;
    }
    form.querySelectorAll('input[name=method]').forEach(function (radio) {
      radio.addEventListener('change', function () { clearErrors(); showPanels(); });
    });
    showPanels();

    function say(text) { if (!progress) return; progress.textContent = text || ''; progress.hidden = !text; }
    function clearErrors() {
      errorBox.hidden = true; errorBox.textContent = '';
      [amountErrors, methodErrors].forEach(function (list) {
        if (list) { list.hidden = true; list.textContent = ''; }
      });
    }
    function showError(text, list) {
      var target = list || errorBox;
      var item = document.createElement(list ? 'li' : 'p');
      item.textContent = text;
      target.appendChild(item);
      target.hidden = false;
      if (!list) target.scrollIntoView({block: 'nearest'});
    }
    function showLink(text, href, label) {
      var item = document.createElement('p');
      item.textContent = text + ' ';
      var link = document.createElement('a');
      link.href = href; link.textContent = label; link.target = '_blank'; link.rel = 'noopener';
      item.appendChild(link);
      errorBox.appendChild(item);
      errorBox.hidden = false;
    }
    function setBusy(on) { busy = on; button.disabled = on; if (!on) say(''); }
    function holder(method) {
      var panel = panelOf(method);
      var name = panel.querySelector('[data-holder-name]');
      var email = panel.querySelector('[data-holder-email]');
      var details = {name: name ? name.value.trim() : ''};
      if (email && email.value.trim()) details.email = email.value.trim();
      return details;
    }

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

    function setupResult(result) {
      if (result.error) {
        showError(result.error.message || msg.msgUnchanged);
        return null;
      }
      var pm = result.setupIntent.payment_method;
      return typeof pm === 'string' ? pm : pm.id;
    }

    async function cardToPaymentMethod() {
      if (paymentMethodId) return paymentMethodId;
      var result = await stripe.confirmCardSetup(form.dataset.setupSecret, {payment_method: {card: card}});
      paymentMethodId = setupResult(result);
      return paymentMethodId;
    }

    async function ibanToPaymentMethod() {
      if (paymentMethodId) return paymentMethodId;
      var account = iban;
      if (!account) {
        var typed = ibanInput.value.replace(/\s+/g, '').toUpperCase();
        if (!typed) { showError(msg.msgIban); return null; }
        account = {iban: typed};
      }
      var secret = form.dataset.sepaSetupSecret || form.dataset.setupSecret;
      var result = await stripe.confirmSepaDebitSetup(secret, {
        payment_method: {sepa_debit: account, billing_details: holder('sepa_debit')},
      });
      paymentMethodId = setupResult(result);
      return paymentMethodId;
    }

    async function post() {
      var response = await fetch(form.action, {
        method: 'POST', body: new FormData(form), credentials: 'same-origin',
        headers: {Accept: 'application/json'},
      });
      return response.json();
    }

    // An answer that ends this attempt (invalid input, or failed): shown, form usable again.
    function finished(data) {
      if (data.status === 'invalid') {
        Object.keys(data.errors).forEach(function (field) {
          var list = field === 'amount' ? amountErrors : field === 'method' ? methodErrors : null;
          data.errors[field].forEach(function (m) { showError(m, list); });
        });
        setBusy(false);
        return true;
      }
      if (data.status === 'failed') {
        // Nothing was charged; the next try is a new payment with new details.
        form.elements.key.value = data.key;
        form.dataset.setupSecret = data.setup_client_secret;
        form.dataset.sepaSetupSecret = data.sepa_setup_client_secret || '';
        paymentMethodId = null;
        showError(msg.msgFailed + ' ' + data.message);
        showError(msg.msgUnchanged);
        setBusy(false);
        return true;
      }
      return false;
    }

    async function payByAch() {
      say(msg.msgPaying);
      var data = await post();
      if (finished(data)) return;
      if (data.status !== 'requires_action' || !data.client_secret) { window.location.assign(data.payment_url); return; }
      say(msg.msgLinkBank);
      var collected = await stripe.collectBankAccountForPayment({
        clientSecret: data.client_secret,
        params: {payment_method_type: 'us_bank_account', payment_method_data: {billing_details: holder('us_bank_account')}},
        expand: ['payment_method'],
      });
      if (collected.error) { showError(collected.error.message); setBusy(false); return; }
      if (collected.paymentIntent.status === 'requires_payment_method') { showError(msg.msgNoBank); setBusy(false); return; }
      if (collected.paymentIntent.status === 'requires_confirmation') {
        say(msg.msgConfirm);
        var confirmed = await stripe.confirmUsBankAccountPayment(data.client_secret);
        if (confirmed.error) { showError(msg.msgFailed + ' ' + confirmed.error.message); setBusy(false); return; }
        var next = confirmed.paymentIntent.next_action;
        if (next && next.type === 'verify_with_microdeposits') {
          say('');
          showLink(msg.msgVerify, next.verify_with_microdeposits.hosted_verification_url, msg.msgVerifyLink);
          return;
        }
      }
      say(msg.msgWaiting);
      window.location.assign(data.payment_url);
    }

    async function saveAch() {
      var secret = form.dataset.setupSecret;
      say(msg.msgLinkBank);
      var collected = await stripe.collectBankAccountForSetup({
        clientSecret: secret,
        params: {payment_method_type: 'us_bank_account', payment_method_data: {billing_details: holder('us_bank_account')}},
        expand: ['payment_method'],
      });
      if (collected.error) { showError(collected.error.message); setBusy(false); return; }
      if (collected.setupIntent.status === 'requires_payment_method') { showError(msg.msgNoBank); setBusy(false); return; }
      var confirmed = await stripe.confirmUsBankAccountSetup(secret);
      if (confirmed.error) { showError(confirmed.error.message); setBusy(false); return; }
      var next = confirmed.setupIntent.next_action;
      if (next && next.type === 'verify_with_microdeposits') {
        say('');
        showLink(msg.msgVerify, next.verify_with_microdeposits.hosted_verification_url, msg.msgVerifyLink);
        return;
      }
      form.elements.payment_method_id.value = setupResult(confirmed);
      form.submit();
    }

    form.addEventListener('submit', async function (event) {
      event.preventDefault();
      if (busy) return;  // one payment per click, even on a double tap
      var method = currentMethod();
      clearErrors();
      if (method === 'us_bank_account' && !(paying ? canPayAch : canSaveAch)) { showPanels(); return; }
      setBusy(true);
      try {
        if (method === 'us_bank_account') {
          await (paying ? payByAch() : saveAch());
          return;
        }
        say(method === 'card' ? msg.msgChecking : msg.msgCheckingBank);
        var pm = method === 'card' ? await cardToPaymentMethod() : await ibanToPaymentMethod();
        if (!pm) { setBusy(false); return; }
        form.elements.payment_method_id.value = pm;
        if (!paying) { form.submit(); return; }
        say(msg.msgPaying);
        var data = await post();
        if (finished(data)) return;
        if (data.status === 'requires_action') {
          say(msg.msgConfirm);
          await stripe.confirmCardPayment(data.client_secret);
          say(msg.msgWaiting);
          poll(data.status_url, data.payment_url);
          return;
        }
        window.location.assign(data.payment_url);
      } catch (err) {
        showError(msg.msgError);
        setBusy(false);
      }
    });
  }
})();
