"""The words of dunning messages: built-in templates in English and German, the
placeholders a landlord may use in their own, and a renderer that knows nothing else.

Landlord-edited text is not a Django template (no tags, no attribute access): only
`{{ name }}` placeholders from PLACEHOLDERS are replaced, so a template cannot reach
into the database, and a typo is refused at save time by `unknown_placeholders`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PLACEHOLDER = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)\s*}}")
BRACES = re.compile(r"{{|}}|{%|%}")

PLACEHOLDERS: dict[str, str] = {
    "tenant_name": "The tenant's name",
    "landlord_name": "Your company name",
    "invoice_number": "The invoice number",
    "amount_due": "What is still open on the invoice",
    "invoice_total": "The invoice total",
    "due_date": "The due date",
    "days_overdue": "Days since the due date",
    "fee_amount": "The late fee just charged",
    "fee_invoice_number": "The late-fee invoice number",
    "retry_date": "When the payment is tried again",
    "decline_reason": "Why the bank declined the payment",
    "portal_url": "Link to pay in the tenant portal",
    "payment_method_url": "Link to update the payment method",
}

LANGUAGES = ("en", "de")

# kind → what it is, for the template editor.
KINDS: dict[str, str] = {
    "reminder": "Reminder before the due date",
    "due_notice": "Due-day notice",
    "overdue_notice": "Overdue notice",
    "late_fee": "Late fee charged",
    "final_notice": "Final notice",
    "payment_failed": "Automatic payment failed (will retry)",
    "update_method": "Automatic payment failed (update the payment method)",
}


@dataclass(frozen=True)
class Template:
    subject: str
    body: str
    sms: str


_SIGN_EN = "\n\nKind regards,\n{{ landlord_name }}"
_SIGN_DE = "\n\nMit freundlichen Grüßen\n{{ landlord_name }}"

DEFAULTS: dict[tuple[str, str], Template] = {
    ("reminder", "en"): Template(
        "Rent due on {{ due_date }}: invoice {{ invoice_number }}",
        "Hello {{ tenant_name }},\n\na friendly reminder: invoice {{ invoice_number }} "
        "over {{ amount_due }} is due on {{ due_date }}.\n\nPay online: {{ portal_url }}"
        + _SIGN_EN,
        "{{ landlord_name }}: {{ amount_due }} (invoice {{ invoice_number }}) is due on "
        "{{ due_date }}. Pay: {{ portal_url }}",
    ),
    ("reminder", "de"): Template(
        "Miete fällig am {{ due_date }}: Rechnung {{ invoice_number }}",
        "Hallo {{ tenant_name }},\n\neine freundliche Erinnerung: Die Rechnung "
        "{{ invoice_number }} über {{ amount_due }} ist am {{ due_date }} fällig.\n\n"
        "Online bezahlen: {{ portal_url }}" + _SIGN_DE,
        "{{ landlord_name }}: {{ amount_due }} (Rechnung {{ invoice_number }}) fällig am "
        "{{ due_date }}. Zahlen: {{ portal_url }}",
    ),
    ("due_notice", "en"): Template(
        "Rent due today: invoice {{ invoice_number }}",
        "Hello {{ tenant_name }},\n\ninvoice {{ invoice_number }} over {{ amount_due }} "
        "is due today.\n\nPay online: {{ portal_url }}" + _SIGN_EN,
        "{{ landlord_name }}: {{ amount_due }} is due today. Pay: {{ portal_url }}",
    ),
    ("due_notice", "de"): Template(
        "Miete heute fällig: Rechnung {{ invoice_number }}",
        "Hallo {{ tenant_name }},\n\ndie Rechnung {{ invoice_number }} über "
        "{{ amount_due }} ist heute fällig.\n\nOnline bezahlen: {{ portal_url }}" + _SIGN_DE,
        "{{ landlord_name }}: {{ amount_due }} heute fällig. Zahlen: {{ portal_url }}",
    ),
    ("overdue_notice", "en"): Template(
        "Overdue: invoice {{ invoice_number }}",
        "Hello {{ tenant_name }},\n\nwe have not yet received payment of {{ amount_due }} "
        "for invoice {{ invoice_number }}, due on {{ due_date }} ({{ days_overdue }} days "
        "ago). Please pay as soon as possible: {{ portal_url }}\n\nIf you have already "
        "paid, thank you, and please ignore this message." + _SIGN_EN,
        "{{ landlord_name }}: invoice {{ invoice_number }} ({{ amount_due }}) is "
        "{{ days_overdue }} days overdue. Pay: {{ portal_url }}",
    ),
    ("overdue_notice", "de"): Template(
        "Zahlungserinnerung: Rechnung {{ invoice_number }}",
        "Hallo {{ tenant_name }},\n\nwir haben die Zahlung von {{ amount_due }} für die "
        "Rechnung {{ invoice_number }}, fällig am {{ due_date }} (vor {{ days_overdue }} "
        "Tagen), noch nicht erhalten. Bitte zahlen Sie so bald wie möglich: "
        "{{ portal_url }}\n\nFalls Sie bereits gezahlt haben, danke – dann betrachten Sie "
        "diese Nachricht bitte als gegenstandslos." + _SIGN_DE,
        "{{ landlord_name }}: Rechnung {{ invoice_number }} ({{ amount_due }}) ist seit "
        "{{ days_overdue }} Tagen überfällig. Zahlen: {{ portal_url }}",
    ),
    ("late_fee", "en"): Template(
        "Late fee charged: invoice {{ invoice_number }}",
        "Hello {{ tenant_name }},\n\ninvoice {{ invoice_number }} is {{ days_overdue }} "
        "days overdue, so a late fee of {{ fee_amount }} was charged (invoice "
        "{{ fee_invoice_number }}). Still open on the rent invoice: {{ amount_due }}.\n\n"
        "Pay online: {{ portal_url }}" + _SIGN_EN,
        "{{ landlord_name }}: late fee {{ fee_amount }} charged on overdue invoice "
        "{{ invoice_number }}. Pay: {{ portal_url }}",
    ),
    ("late_fee", "de"): Template(
        "Mahngebühr berechnet: Rechnung {{ invoice_number }}",
        "Hallo {{ tenant_name }},\n\ndie Rechnung {{ invoice_number }} ist seit "
        "{{ days_overdue }} Tagen überfällig; daher wurde eine Mahngebühr von "
        "{{ fee_amount }} berechnet (Rechnung {{ fee_invoice_number }}). Auf der "
        "Mietrechnung noch offen: {{ amount_due }}.\n\nOnline bezahlen: {{ portal_url }}"
        + _SIGN_DE,
        "{{ landlord_name }}: Mahngebühr {{ fee_amount }} für Rechnung {{ invoice_number }}. "
        "Zahlen: {{ portal_url }}",
    ),
    ("final_notice", "en"): Template(
        "Final notice: invoice {{ invoice_number }}",
        "Hello {{ tenant_name }},\n\nthis is our final notice: {{ amount_due }} for "
        "invoice {{ invoice_number }} has been open since {{ due_date }}. Please pay now "
        "or contact us to agree a payment plan: {{ portal_url }}" + _SIGN_EN,
        "{{ landlord_name }}: FINAL NOTICE, {{ amount_due }} open since {{ due_date }}. "
        "Pay or call us: {{ portal_url }}",
    ),
    ("final_notice", "de"): Template(
        "Letzte Mahnung: Rechnung {{ invoice_number }}",
        "Hallo {{ tenant_name }},\n\ndies ist unsere letzte Mahnung: {{ amount_due }} für "
        "die Rechnung {{ invoice_number }} sind seit dem {{ due_date }} offen. Bitte zahlen "
        "Sie jetzt oder vereinbaren Sie mit uns eine Ratenzahlung: {{ portal_url }}" + _SIGN_DE,
        "{{ landlord_name }}: LETZTE MAHNUNG, {{ amount_due }} offen seit {{ due_date }}. "
        "Zahlen: {{ portal_url }}",
    ),
    ("payment_failed", "en"): Template(
        "Your automatic payment did not go through",
        "Hello {{ tenant_name }},\n\nthe automatic payment of {{ amount_due }} for invoice "
        "{{ invoice_number }} was declined ({{ decline_reason }}). We will try again on "
        "{{ retry_date }}. You can also pay now: {{ portal_url }}" + _SIGN_EN,
        "{{ landlord_name }}: autopay of {{ amount_due }} declined. Next try "
        "{{ retry_date }}. Pay now: {{ portal_url }}",
    ),
    ("payment_failed", "de"): Template(
        "Ihre automatische Zahlung ist fehlgeschlagen",
        "Hallo {{ tenant_name }},\n\ndie automatische Zahlung von {{ amount_due }} für die "
        "Rechnung {{ invoice_number }} wurde abgelehnt ({{ decline_reason }}). Wir "
        "versuchen es am {{ retry_date }} erneut. Sie können auch jetzt zahlen: "
        "{{ portal_url }}" + _SIGN_DE,
        "{{ landlord_name }}: Lastschrift/Karte über {{ amount_due }} abgelehnt. Neuer "
        "Versuch am {{ retry_date }}. Zahlen: {{ portal_url }}",
    ),
    ("update_method", "en"): Template(
        "Please update your payment method",
        "Hello {{ tenant_name }},\n\nthe automatic payment of {{ amount_due }} for invoice "
        "{{ invoice_number }} failed ({{ decline_reason }}), and trying again will not "
        "help. Please add a new card or bank account: {{ payment_method_url }}\n\nOr pay "
        "the invoice now: {{ portal_url }}" + _SIGN_EN,
        "{{ landlord_name }}: autopay failed ({{ decline_reason }}). Please update your "
        "payment method: {{ payment_method_url }}",
    ),
    ("update_method", "de"): Template(
        "Bitte aktualisieren Sie Ihre Zahlungsmethode",
        "Hallo {{ tenant_name }},\n\ndie automatische Zahlung von {{ amount_due }} für die "
        "Rechnung {{ invoice_number }} ist fehlgeschlagen ({{ decline_reason }}), und ein "
        "neuer Versuch hilft nicht. Bitte hinterlegen Sie eine neue Karte oder ein neues "
        "Konto: {{ payment_method_url }}\n\nOder zahlen Sie jetzt: {{ portal_url }}" + _SIGN_DE,
        "{{ landlord_name }}: Zahlung fehlgeschlagen ({{ decline_reason }}). Bitte "
        "Zahlungsmethode aktualisieren: {{ payment_method_url }}",
    ),
}

SMS_MAX = 480


def default_template(kind: str, language: str) -> Template:
    return DEFAULTS.get((kind, language)) or DEFAULTS[(kind, "en")]


def unknown_placeholders(text: str) -> list[str]:
    """Placeholder names in `text` that the renderer does not know, in order."""
    return [name for name in PLACEHOLDER.findall(text) if name not in PLACEHOLDERS]


def stray_braces(text: str) -> bool:
    """Whether `text` has braces that are not a well-formed placeholder (e.g. a
    template tag or `{{ amount` left open): the renderer would print them as is."""
    return bool(BRACES.search(PLACEHOLDER.sub("", text)))


def render(text: str, context: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: str(context.get(m.group(1), "")), text)


def sample_context() -> dict[str, str]:
    """Values for the template editor's preview."""
    return {
        "tenant_name": "Alex Example",
        "landlord_name": "Your company",
        "invoice_number": "INV-2026-000123",
        "amount_due": "€1,250.00",
        "invoice_total": "€1,250.00",
        "due_date": "3 December 2026",
        "days_overdue": "7",
        "fee_amount": "€25.00",
        "fee_invoice_number": "INV-2026-000124",
        "retry_date": "6 December 2026",
        "decline_reason": "insufficient funds",
        "portal_url": "https://rentledger.example/portal/invoices/123/",
        "payment_method_url": "https://rentledger.example/portal/cards/",
    }
