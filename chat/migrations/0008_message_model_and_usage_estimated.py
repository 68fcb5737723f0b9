from django.db import migrations, models

# Django adds a NOT NULL column on SQLite by rebuilding the table, and the rebuild creates
# every index of the model's state again, the PostgreSQL-only full-text index of 0005
# included, which SQLite cannot parse. `ALTER TABLE ... ADD COLUMN` with a constant default
# needs no rebuild there; elsewhere the schema editor adds the columns as usual.


def _fields():
    model = models.CharField(max_length=100, blank=True, default="")
    model.set_attributes_from_name("model")
    usage_estimated = models.BooleanField(default=False)
    usage_estimated.set_attributes_from_name("usage_estimated")
    return model, usage_estimated


def add_columns(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(
            "ALTER TABLE \"chat_message\" ADD COLUMN \"model\" varchar(100) NOT NULL DEFAULT ''"
        )
        schema_editor.execute(
            'ALTER TABLE "chat_message" ADD COLUMN "usage_estimated" bool NOT NULL DEFAULT 0'
        )
        return
    message = apps.get_model("chat", "Message")
    for field in _fields():
        schema_editor.add_field(message, field)


def remove_columns(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for name in ("model", "usage_estimated"):
            schema_editor.execute(f'ALTER TABLE "chat_message" DROP COLUMN "{name}"')
        return
    message = apps.get_model("chat", "Message")
    for field in _fields():
        schema_editor.remove_field(message, field)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0007_message_timing_live_runs_usage"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(add_columns, remove_columns)],
            state_operations=[
                migrations.AddField(
                    model_name="message",
                    name="model",
                    field=models.CharField(blank=True, max_length=100),
                ),
                migrations.AddField(
                    model_name="message",
                    name="usage_estimated",
                    field=models.BooleanField(default=False),
                ),
            ],
        ),
    ]
