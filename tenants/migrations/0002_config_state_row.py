from django.db import migrations


def create_row(apps, schema_editor):
    ConfigState = apps.get_model("tenants", "ConfigState")
    ConfigState.objects.get_or_create(pk=1, defaults={"generation": 0})


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [migrations.RunPython(create_row, migrations.RunPython.noop)]
