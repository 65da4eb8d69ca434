"""Staff payment pages, mounted into the `dashboard` namespace by billing_site.urls."""

from django.urls import path

from payments import views

urlpatterns = [
    path("payments/", views.PaymentListView.as_view(), name="payment_list"),
    path("payments.csv", views.PaymentListCsvView.as_view(), name="payment_list_csv"),
    path("payments/settings/", views.PaymentSettingsView.as_view(), name="payment_settings"),
    path("payments/<int:pk>/", views.PaymentDetailView.as_view(), name="payment_detail"),
    path("payments/<int:pk>/reverse/", views.PaymentReverseView.as_view(), name="payment_reverse"),
    path(
        "tenants/<int:pk>/record-payment/",
        views.ManualPaymentRecordView.as_view(),
        name="tenant_payment_record",
    ),
    path(
        "tenants/<int:pk>/credit/pay-back/",
        views.CreditPayBackView.as_view(),
        name="tenant_credit_pay_back",
    ),
    path(
        "credit-pay-backs/<int:pk>/reverse/",
        views.CreditPayBackReverseView.as_view(),
        name="credit_pay_back_reverse",
    ),
    path("stripe-events/", views.StripeEventListView.as_view(), name="stripe_event_list"),
    path(
        "stripe-events/<int:pk>/",
        views.StripeEventDetailView.as_view(),
        name="stripe_event_detail",
    ),
    path(
        "stripe-events/<int:pk>/reprocess/",
        views.StripeEventReprocessView.as_view(),
        name="stripe_event_reprocess",
    ),
]
