"""Operator admin for the ledger: read-only, because the ledger is append-only.

Corrections are reversals posted through `ledger.services`, never admin edits.
"""

from django.contrib import admin

from ledger.models import Account, LedgerEntry, LedgerHead, LedgerTransaction


class ReadOnlyAdmin(admin.ModelAdmin):
    list_select_related = ["landlord"]
    show_full_result_count = False  # no COUNT(*) over big tables

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["code", "kind", "currency", "tenant", "landlord"]
    list_filter = ["landlord", "kind", "currency"]
    search_fields = ["code"]
    list_select_related = ["landlord", "tenant"]


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    fields = [
        "account",
        "amount_minor",
        "currency",
        "tenant",
        "lease",
        "document_kind",
        "document_id",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = [
        "seq",
        "landlord",
        "effective_at",
        "description",
        "document_kind",
        "document_id",
    ]
    list_filter = ["landlord", "document_kind"]
    search_fields = ["idempotency_key", "description"]
    ordering = ["landlord", "-seq"]
    inlines = [LedgerEntryInline]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "transaction",
        "account",
        "amount_minor",
        "currency",
        "document_kind",
        "document_id",
    ]
    list_filter = ["landlord", "currency", "document_kind"]
    list_select_related = ["landlord", "transaction", "account"]
    raw_id_fields = ["transaction", "account", "tenant", "lease"]


@admin.register(LedgerHead)
class LedgerHeadAdmin(ReadOnlyAdmin):
    list_display = ["landlord", "last_seq", "last_hash", "updated_at"]
