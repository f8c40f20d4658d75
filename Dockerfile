# One image, two roles: `api` (uvicorn) and `worker` (celery). Build the GPU worker with
# --build-arg EXTRAS=engine to install torch/diffusers; the API never imports them.
FROM python:3.11-slim
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LETHE_DATA_DIR=/data
WORKDIR /srv/lethe
COPY pyproject.toml README.md* ./
COPY app ./app
COPY workers ./workers
COPY lethe ./lethe
COPY bench ./bench
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" boto3
RUN useradd --create-home lethe && mkdir -p /data && chown lethe /data
USER lethe
EXPOSE 8000
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
