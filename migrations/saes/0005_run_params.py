"""A run stores every DashboardParams field as JSON instead of four of them as columns."""

from typing import Any

from django.db import migrations, models

# DashboardParams' defaults when this was written: what every run before it was computed with beside its
# four stored columns. Written out because a migration must not change when the app's defaults do.
PARAMS_THEN: dict[str, int | bool] = {
    "n_intervals": 5, "examples_per_interval": 5, "act_hist_bins": 50, "logit_hist_bins": 50, "logit_tokens": 10,
    "neighbours": 10, "seed": 0, "skip_bos": True,
}
COLUMNS = ("top_k", "context_before", "context_after", "batch_size")


def params_fill(apps: Any, schema_editor: Any) -> None:
    DashboardRun = apps.get_model("saes", "DashboardRun")
    for run in DashboardRun.objects.only("pk", *COLUMNS).iterator():
        run.params = {**PARAMS_THEN, **{name: getattr(run, name) for name in COLUMNS}}
        run.save(update_fields=["params"])


def columns_fill(apps: Any, schema_editor: Any) -> None:
    DashboardRun = apps.get_model("saes", "DashboardRun")
    for run in DashboardRun.objects.only("pk", "params").iterator():
        for name in COLUMNS:
            setattr(run, name, run.params[name])
        run.save(update_fields=list(COLUMNS))


class Migration(migrations.Migration):

    dependencies = [
        ('saes', '0004_run_feature_counts'),
    ]

    operations = [
        migrations.AddField(
            model_name='dashboardrun',
            name='params',
            field=models.JSONField(default=dict),
            preserve_default=False,
        ),
        migrations.RunPython(params_fill, columns_fill),
        # Defaults only so that migrating back can add the columns to existing rows before columns_fill runs.
        migrations.AlterField(model_name='dashboardrun', name='top_k',
                              field=models.PositiveSmallIntegerField(default=20)),
        migrations.AlterField(model_name='dashboardrun', name='context_before',
                              field=models.PositiveSmallIntegerField(default=24)),
        migrations.AlterField(model_name='dashboardrun', name='context_after',
                              field=models.PositiveSmallIntegerField(default=8)),
        migrations.RemoveField(model_name='dashboardrun', name='top_k'),
        migrations.RemoveField(model_name='dashboardrun', name='context_before'),
        migrations.RemoveField(model_name='dashboardrun', name='context_after'),
        migrations.RemoveField(model_name='dashboardrun', name='batch_size'),
    ]
