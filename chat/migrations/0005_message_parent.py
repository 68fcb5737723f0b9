import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def link_the_linear_history(apps, schema_editor):
    """Before branches, a conversation was one line: each user message followed the answer
    sent last before it, and an answer stored without `reply_to` (older rows) answered the
    user message sent last before it. Say so in the new links, one UPDATE each."""
    Message = apps.get_model("chat", "Message")

    def latest_before(role):
        return Subquery(
            Message.objects.filter(
                conversation=OuterRef("conversation"),
                role=role,
                created_at__lt=OuterRef("created_at"),
            )
            .order_by("-created_at", "-id")
            .values("pk")[:1]
        )

    Message.objects.filter(role="assistant", reply_to__isnull=True).update(
        reply_to=latest_before("user")
    )
    Message.objects.filter(role="user").update(parent=latest_before("assistant"))


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0004_message_context_omitted_turns"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="children",
                to="chat.message",
            ),
        ),
        migrations.RunPython(link_the_linear_history, migrations.RunPython.noop, elidable=True),
    ]
