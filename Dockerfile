FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY verification verification
COPY webhooks webhooks
COPY tasks tasks
COPY bot bot
COPY tidings tidings
RUN pip install --no-cache-dir . && useradd --system --uid 10001 tidings
USER tidings
EXPOSE 8080
CMD ["tidings", "web"]
