import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0002_payment_stripe_payment_method"),
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="PaymentSettings",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "allow_partial",
                    models.BooleanField(
                        default=True,
                        help_text=(
                            "Tenants may pay less than the open amount in the portal. Either "
                            "way, paying more is allowed and kept as credit for the next invoice."
                        ),
                        verbose_name="Allow partial payments",
                    ),
                ),
                (
                    "landlord",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="payment_settings",
                        to="tenants.landlord",
                    ),
                ),
            ],
            options={
                "abstract": False,
            },
        ),
    ]
