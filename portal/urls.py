"""The tenant portal, under /portal/ with its own `portal` namespace (billing_site.urls)."""

from django.urls import path

from portal import views

app_name = "portal"

urlpatterns = [
    path("", views.HomeView.as_view(), name="home"),
    path("login/", views.PortalLoginView.as_view(), name="login"),
    path("logout/", views.PortalLogoutView.as_view(), name="logout"),
    path("choose/", views.ChooseTenancyView.as_view(), name="choose"),
    path("invite/<str:token>/", views.InvitationAcceptView.as_view(), name="invitation_accept"),
    path("password/reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("password/reset/sent/", views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "password/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password/reset/done/",
        views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("leases/", views.LeaseListView.as_view(), name="leases"),
    path("invoices/", views.InvoiceListView.as_view(), name="invoices"),
    path("invoices/<int:pk>/", views.InvoiceDetailView.as_view(), name="invoice_detail"),
    path("invoices/<int:pk>/pdf/", views.InvoicePdfView.as_view(), name="invoice_pdf"),
    path("pay/", views.PayView.as_view(), name="pay"),
    path("messages/", views.NoticeListView.as_view(), name="notices"),
    path("payments/", views.PaymentListView.as_view(), name="payments"),
    path("payments/<int:pk>/", views.PaymentDetailView.as_view(), name="payment_detail"),
    path("payments/<int:pk>/status/", views.PaymentStatusView.as_view(), name="payment_status"),
    path("cards/", views.MethodListView.as_view(), name="methods"),
    path("cards/add/", views.MethodAddView.as_view(), name="method_add"),
    path("cards/<int:pk>/autopay/", views.MethodAutopayView.as_view(), name="method_autopay"),
    path("cards/<int:pk>/remove/", views.MethodRemoveView.as_view(), name="method_remove"),
    path("profile/", views.ProfileView.as_view(), name="profile"),
]
