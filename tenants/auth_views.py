"""Sign-up, invitation acceptance; login/logout/password reset are Django's own views."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views import View

from tenants import services
from tenants.forms import AcceptInvitationForm, SignUpForm, apply_service_errors
from tenants.middleware import SESSION_KEY


class SignUpView(View):
    def get(self, request):
        return render(request, "registration/signup.html", {"form": SignUpForm()})

    def post(self, request):
        form = SignUpForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                membership = services.landlord_sign_up(
                    name=data["company"],
                    full_name=data["full_name"],
                    email=data["email"],
                    password=data["password"],
                    timezone_name=data["timezone"],
                    currency=data["currency"],
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
                request.session[SESSION_KEY] = membership.landlord_id
                messages.success(request, f"Welcome to Rentledger, {membership.landlord.name}.")
                return redirect("dashboard:home")
        return render(request, "registration/signup.html", {"form": form})


class InvitationAcceptView(View):
    def _context(self, request, token, form=None):
        try:
            invitation = services.staff_invitation_find(token=token)
        except ValidationError as exc:
            return None, {"error": exc.messages[0]}
        existing = request.user if request.user.is_authenticated else None
        needs_password = existing is None and not services.user_exists(email=invitation.email)
        form = form or AcceptInvitationForm(needs_password=needs_password)
        return invitation, {
            "invitation": invitation,
            "form": form,
            "needs_password": needs_password,
        }

    def get(self, request, token: str):
        _invitation, context = self._context(request, token)
        return render(
            request, "registration/invitation.html", context, status=200 if _invitation else 410
        )

    def post(self, request, token: str):
        invitation, context = self._context(request, token)
        if invitation is None:
            return render(request, "registration/invitation.html", context, status=410)
        form = AcceptInvitationForm(request.POST, needs_password=context["needs_password"])
        if form.is_valid():
            user = request.user if request.user.is_authenticated else None
            if user is None and not context["needs_password"]:
                messages.info(
                    request, "You already have an account: log in, then open the link again."
                )
                return redirect(f"/accounts/login/?next={request.path}")
            try:
                membership = services.staff_invitation_accept(
                    token=token,
                    user=user,
                    password=form.cleaned_data.get("password", ""),
                    full_name=form.cleaned_data.get("full_name", ""),
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
                request.session[SESSION_KEY] = membership.landlord_id
                messages.success(request, f"You joined {membership.landlord.name}.")
                return redirect("dashboard:home")
        context["form"] = form
        return render(request, "registration/invitation.html", context)
