import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('lms', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='Tokenizer',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('definition', models.TextField(help_text='tokenizer.json, as tokenizers.Tokenizer.to_str() writes it')),
                ('bos_token_id', models.IntegerField(null=True)),
                ('eos_token_id', models.IntegerField(null=True)),
                ('stored', models.DateTimeField(auto_now=True)),
                ('language_model', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='tokenizer', to='lms.languagemodel')),
            ],
        ),
    ]
